import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { api, type Router, startRouter, until } from "../helpers/network.ts";
import { openRaw, type RawSocket, registerRaw } from "../helpers/raw-miner.ts";

// The security review of issue 11's work (commit fb0d836), tried as an attacker would against the real router
// (wrangler dev, real Durable Objects and R2) and raw WebSocket miners: H1 (sessions without end, every miner in
// all of them), M2 (audit flood, guessable session ids), M3 (token spellings, IPv6 /64, unknown-id lookups),
// M5 (unauthenticated 8 MiB bodies), M6 (revoke and the channels a miner holds work in). Pure rules are in
// test/unit/review-fixes.test.ts.

/** One API key per tenant, so each test counts its own sessions against MAX_SESSIONS_PER_OWNER. */
const TENANTS = ["dev", "alice", "bob", "carol", "dave", "erin", "frank", "gina"] as const;
type Tenant = (typeof TENANTS)[number];
const keyOf = (t: Tenant) => (t === "dev" ? "dev-key" : `${t}-key`);
const QUOTA = 3;
const PER_SLOT = 3;
const AUTH_FAILURES = 5;
/** The model of the default (configured, shared) session on this router: only the cap test's miner serves it. */
const CAP_MODEL = `cap-${randomBytes(3).toString("hex")}`;
const rand = () => randomBytes(4).toString("hex");

let router: Router;
const sockets: RawSocket[] = [];
const pending: Promise<unknown>[] = [];

beforeAll(async () => {
  router = await startRouter({
    vars: {
      API_KEYS: TENANTS.map((t) => `${t}:${keyOf(t)}`).join(","),
      MAX_SESSIONS_PER_OWNER: String(QUOTA),
      MINER_SESSIONS_PER_SLOT: String(PER_SLOT),
      DEFAULT_MODEL: CAP_MODEL,
    },
    rateLimits: { RATE_LIMIT_AUTH_FAILURES: AUTH_FAILURES, RATE_LIMIT_IP: 100_000, RATE_LIMIT_MINER: 100_000, RATE_LIMIT_KEY: 100_000 },
  });
});

afterAll(async () => {
  for (const s of sockets) s.close();
  await Promise.allSettled(pending);
  await router?.stop();
});

const as = (tenant: Tenant, path: string, body?: unknown, headers?: Record<string, string>) =>
  api(router, path, { key: keyOf(tenant), ...(body !== undefined ? { body } : {}), ...(headers ? { headers } : {}) });

async function create(tenant: Tenant, body: Record<string, unknown>): Promise<string> {
  // Only the cap test's sessions serve CAP_MODEL (the default session's model here).
  const res = await as(tenant, "/api/v1/sessions", { deposit: 1_000_000, model: "other-model", ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id as string;
}

async function open(path: string, token: string): Promise<RawSocket> {
  const s = await openRaw(router.url, path, token);
  sockets.push(s);
  return s;
}

/** A call with a bearer that is not an API key (a miner token, or garbage), from `ip`. */
function bearer(token: string, path: string, init: { body?: unknown; ip: string }) {
  return api(router, path, {
    key: null,
    headers: { authorization: `Bearer ${token}`, "CF-Connecting-IP": init.ip },
    ...(init.body !== undefined ? { body: init.body } : {}),
  });
}

/** The session ids in the newest `sessions` message the pool sent this miner. */
const told = (pool: RawSocket): string[] =>
  (pool.messages.filter((m) => m.type === "sessions").at(-1)?.sessions ?? []).map((s: { session_id: string }) => s.session_id);

describe("H1: sessions per owner, sessions per miner, bounded listings", () => {
  it("an owner gets MAX_SESSIONS_PER_OWNER sessions (deposit 0 included), then 403 session_quota_exceeded", async () => {
    await create("carol", { deposit: 0 });
    await create("carol", { session_id: `carol-${rand()}` });
    await create("carol", {});
    const over = await as("carol", "/api/v1/sessions", { deposit: 0 });
    expect(over.status, JSON.stringify(over.body)).toBe(403);
    expect(over.body.error.code).toBe("session_quota_exceeded");
    expect(over.body.error.details).toMatchObject({ max_sessions: QUOTA });
    expect(over.body.error.message).toMatch(/MAX_SESSIONS_PER_OWNER/);
    // Another owner is not affected, and the shared sessions count against nobody.
    await create("dave", {});
    const shared = await as("carol", "/api/v1/completions", { prompt: "hi", max_tokens: 1, timeout: 0.001 });
    expect(shared.body.error?.code).not.toBe("session_quota_exceeded");
  });

  it("a miner serves at most capacity × MINER_SESSIONS_PER_SLOT sessions: shared ones first, then each owner's in turn", async () => {
    const m = await registerRaw(router.url, { models: [CAP_MODEL], capacity: 1 });
    const pool = await open("/api/v1/miners/connect", m.token);
    expect(pool.status).toBe(101);
    const a = [];
    for (let i = 0; i < QUOTA; i++) a.push(await create("alice", { model: CAP_MODEL }));
    const b = await create("bob", { model: CAP_MODEL });
    // The default session (configured, shared, CAP_MODEL here) is created on first use.
    pending.push(as("dev", "/api/v1/completions", { prompt: "create the default session", max_tokens: 1, timeout: 0.001 }));
    await until(async () => told(pool).includes("default") && told(pool).includes(b), 20_000).catch(() => {
      throw new Error(`the miner was told ${JSON.stringify(told(pool))}`);
    });
    await new Promise((r) => setTimeout(r, 500)); // no later message adds more
    const sessions = told(pool);
    console.log(`a capacity-1 miner, ${QUOTA + 2} sessions of its model, cap ${PER_SLOT}: told ${JSON.stringify(sessions)}`);
    expect(sessions).toHaveLength(PER_SLOT);
    expect(new Set(sessions)).toEqual(new Set(["default", a[0], b]));
    // Alice's later sessions wait for room; their summaries count no miner.
    const summary = await as("alice", `/api/v1/sessions/${a[2]}`);
    expect(summary.body.miners_count).toBe(0);
    expect((await as("bob", `/api/v1/sessions/${b}`)).body.miners_count).toBe(1);
  });

  it("GET /sessions and GET /miners page with limit and before", async () => {
    const mine = [await create("erin", {}), await create("erin", {}), await create("erin", {})];
    const seen: string[] = [];
    let before: string | null = null;
    for (let page = 0; page < 20; page++) {
      const res = await as("erin", `/api/v1/sessions?limit=2${before ? `&before=${encodeURIComponent(before)}` : ""}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.sessions.length).toBeLessThanOrEqual(2);
      expect(res.body.count).toBe(res.body.sessions.length);
      seen.push(...res.body.sessions.map((s: { id: string }) => s.id));
      before = res.body.next_before;
      if (!before) break;
    }
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of mine) expect(seen).toContain(id);
    // Newest first: erin's three in reverse order of creation.
    expect(seen.filter((id) => mine.includes(id))).toEqual([...mine].reverse());
    // Another owner's sessions are not in erin's pages, and a cursor naming one reads as unknown: an empty page.
    expect(seen.some((id) => id.startsWith("carol-"))).toBe(false);
    const carols = (await as("carol", "/api/v1/sessions")).body.sessions.map((s: { id: string }) => s.id) as string[];
    const foreign = await as("erin", `/api/v1/sessions?before=${carols.find((id) => id.startsWith("carol-"))}`);
    expect(foreign.body.sessions).toEqual([]);

    await registerRaw(router.url, { models: [`m-${rand()}`] });
    await registerRaw(router.url, { models: [`m-${rand()}`] });
    const first = await as("erin", "/api/v1/miners?limit=1");
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.nodes).toHaveLength(1);
    expect(first.body.stats.total).toBeGreaterThanOrEqual(2);
    const second = await as("erin", `/api/v1/miners?limit=1&before=${first.body.next_before}`);
    expect(second.body.nodes).toHaveLength(1);
    expect(second.body.nodes[0].address).not.toBe(first.body.nodes[0].address);
    expect((await as("erin", "/api/v1/miners?limit=501")).status).toBe(400);
  });
});

describe("M2: audit rows and session ids", () => {
  it("one audit row per miner and reason class however many task ids; the listing pages", async () => {
    const sid = await create("frank", {});
    const miners = [await registerRaw(router.url, { models: [`m-${rand()}`] }), await registerRaw(router.url, { models: [`m-${rand()}`] })];
    const ask = (token: string, task_id?: string) =>
      bearer(token, `/api/v1/auth/payload_enc_key/${task_id ? "task" : "session"}`, {
        ip: "192.0.2.50",
        body: { session_id: sid, ...(task_id ? { task_id } : {}) },
      });
    const t0 = Date.now();
    for (let i = 1; i <= 40; i += 8) {
      const answers = await Promise.all(Array.from({ length: 8 }, (_, j) => ask(miners[0].token, String(i + j))));
      expect(answers.every((a) => a.status === 403)).toBe(true);
    }
    expect((await ask(miners[0].token)).status).toBe(403);
    expect((await ask(miners[1].token, "7")).status).toBe(403);
    console.log(`41 refused key requests of one miner and 1 of another audited in ${Date.now() - t0} ms`);
    const all = await as("frank", `/api/v1/auth/payload_audit/${sid}`);
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    const byMiner = (addr: string) => all.body.entries.filter((e: { miner: string }) => e.miner === addr);
    // One row per reason class, newest first: the session key, and the task keys it was refused (whatever their ids).
    expect(byMiner(miners[0].address).map((e: { class: string }) => e.class)).toEqual(["session_not_allowlisted", "task_not_allowlisted"]);
    expect(byMiner(miners[1].address)).toHaveLength(1);
    expect(all.body.entries[0]).toMatchObject({ miner: miners[1].address, class: "task_not_allowlisted", task_id: "7" });
    // Page by page, newest first, nothing twice.
    const paged: { miner: string; at: number }[] = [];
    let before: string | null = null;
    for (let page = 0; page < 6; page++) {
      const res = await as("frank", `/api/v1/auth/payload_audit/${sid}?limit=1${before ? `&before=${encodeURIComponent(before)}` : ""}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.entries.length).toBeLessThanOrEqual(1);
      paged.push(...res.body.entries);
      before = res.body.next_before;
      if (!before) break;
    }
    expect(paged.map((e) => e.miner)).toEqual(all.body.entries.map((e: { miner: string }) => e.miner));
    expect(paged.map((e) => e.at)).toEqual([...paged.map((e) => e.at)].sort((x, y) => y - x));
  });

  it("generated session ids are random, not the next number", async () => {
    const ids = [await create("dave", {}), await create("dave", {})];
    console.log(`generated session ids: ${ids.join(", ")}`);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{20,64}$/);
      expect(id).not.toMatch(/^\d+$/);
    }
    expect(ids[0]).not.toBe(ids[1]);
  });
});

describe("M3: one spelling per token, IPv6 by /64", () => {
  const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  /** The same bytes spelled otherwise: the last character's unused low bits set (base64 decoders drop them). */
  const respell = (part: string) => part.slice(0, -1) + B64URL[B64URL.indexOf(part.at(-1)!) ^ 1];

  it("a token with non-canonical base64 in either part is refused, at connect and on miner routes", async () => {
    const m = await registerRaw(router.url, { models: [`m-${rand()}`] });
    const [body, sig] = m.token.split(".");
    // The signature is 32 bytes in 43 characters: its last character carries 2 unused bits.
    const variants = [`${body}.${respell(sig)}`];
    if (body.length % 4 !== 0) variants.push(`${respell(body)}.${sig}`);
    const route = (token: string, ip: string) =>
      bearer(token, "/api/v1/auth/payload_enc_key/session", { ip, body: { session_id: "default" } });
    expect((await route(m.token, "192.0.2.60")).status).not.toBe(401); // the control: the canonical token is accepted
    for (const [i, v] of variants.entries()) {
      expect(v).not.toBe(m.token);
      expect(Buffer.from(v.split(".")[1], "base64url")).toEqual(Buffer.from(sig, "base64url"));
      const res = await route(v, `192.0.2.${61 + i}`);
      expect(res.status, `variant ${i}: ${JSON.stringify(res.body)}`).toBe(401);
      expect((await open("/api/v1/miners/connect", v)).status).toBe(401);
    }
    console.log(`${variants.length} other spellings of one token tried: all refused`);
  });

  it("failed authentications from one IPv6 /64 share one limit; another /64 has its own", async () => {
    const guess = (ip: string) =>
      api(router, "/api/v1/sessions", { key: randomBytes(24).toString("base64url"), headers: { "CF-Connecting-IP": ip } });
    const answers = [];
    // Stop at the first 429: the limit counts in fixed 10 s windows, and the checks below must land in the same one.
    for (let i = 1; i <= 3 * AUTH_FAILURES && answers.at(-1)?.status !== 429; i++)
      answers.push(await guess(`2001:db8:77:5::${i.toString(16)}`));
    const statuses = answers.map((a) => a.status);
    console.log(`${statuses.length} key guesses from ${statuses.length} addresses of one /64: ${statuses.join(",")}`);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.indexOf(429)).toBeLessThanOrEqual(2 * AUTH_FAILURES);
    // The same /64 written otherwise (zeros spelled out) is the same bucket; the neighbouring /64 is not.
    expect((await guess("2001:0db8:0077:0005:ffff::1")).status).toBe(429);
    expect((await guess("2001:db8:77:6::1")).status).toBe(401);
  });
});

describe("M5: the off-chain result write authenticates before it reads the body", () => {
  it("no credential, a bad one, or an API key: refused without parsing the body", async () => {
    const post = (authorization: string | null, ip: string, body: string) =>
      fetch(`${router.url}/api/v3/offchain/result`, {
        method: "POST",
        headers: { "content-type": "application/json", "CF-Connecting-IP": ip, ...(authorization ? { authorization } : {}) },
        body,
      });
    const garbage = "{ this is not JSON";
    const none = await post(null, "192.0.2.70", garbage);
    expect(none.status).toBe(401);
    const bad = await post(`Bearer ${randomBytes(40).toString("base64url")}`, "192.0.2.71", garbage);
    expect(bad.status).toBe(401);
    const client = await post(`Bearer ${keyOf("dev")}`, "192.0.2.72", garbage);
    expect(client.status).toBe(403);
    expect(((await client.json()) as { error: { code: string } }).error.code).toBe("forbidden");
    // 8 MiB of well-formed JSON with a bad token: answered as fast as a small one.
    const big = JSON.stringify({
      session_id: "x",
      task_id: "1",
      content: "A".repeat(8 * 1024 * 1024 - 200),
      content_hash: "0x",
      signature: "0x",
    });
    const t0 = Date.now();
    const large = await post(`Bearer ${randomBytes(40).toString("base64url")}`, "192.0.2.73", big);
    const ms = Date.now() - t0;
    console.log(`8 MiB off-chain write with a bad token: ${large.status} in ${ms} ms`);
    expect(large.status).toBe(401);
  });
});

describe("M6: a revoke closes every channel of the miner, also where it only holds work", () => {
  it("a channel reopened to finish held work (no longer assigned) closes with 4401 on revoke", async () => {
    const model = `m-${rand()}`;
    const sid = await create("gina", { model, max_miners: 1, redundancy: 1, task_timeout: 15 });
    const w = await registerRaw(router.url, { models: [model] });
    const pool = await open("/api/v1/miners/connect", w.token);
    await until(async () => told(pool).includes(sid), 10_000);
    const first = await open(`/api/v1/sessions/${sid}/connect`, w.token);
    expect(first.status).toBe(101);
    await first.next((m) => m.type === "welcome");
    pending.push(as("gina", `/api/v1/completions/${sid}`, { prompt: "hold me", max_tokens: 4, timeout: 15 }));
    const assign = await first.next((m) => m.type === "assign");
    first.send({ type: "ack", task_id: assign.task_id });
    // The miner leaves the pool: the session is no longer assigned to it, but it still holds the task there.
    pool.close();
    await until(async () => (await as("gina", `/api/v1/sessions/${sid}`)).body.miners_count === 0, 10_000);
    first.close();
    const held = await open(`/api/v1/sessions/${sid}/connect`, w.token);
    expect(held.status, JSON.stringify(held.refusal)).toBe(101);
    await held.next((m) => m.type === "welcome");
    // Whoever holds the wallet registers again and revokes every token of the address.
    const again = await registerRaw(router.url, { models: [model], account: w.account });
    const revoked = await bearer(again.token, "/api/v1/miners/revoke", { ip: "192.0.2.80", body: {} });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    // The router's close frame arrives at once (the `close` event waits for the TCP close, which the dev proxy delays).
    const ws = held.ws as WebSocket & { _closeCode?: number };
    const closing = await until(async () => ws.readyState !== WebSocket.OPEN, 5_000).catch(() => false);
    expect(closing, "the held channel is still open 5 s after the revoke").toBe(true);
    expect(ws._closeCode).toBe(4401);
    expect((await as("gina", `/api/v1/sessions/${sid}`)).body.usage.connected_miners).not.toContain(w.address);
  });
});
