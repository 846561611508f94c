import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { sha256Hex, toBase64 } from "../../shared/payload-crypto.ts";
import { offchainResultTypedData } from "../../shared/signing.ts";
import { api, type Miner, ROUTER_DOMAIN, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// Tenancy attacks (issue 11, findings 2, 3, 4 and the session parts of 7) against the real router (wrangler dev,
// real Durable Objects and R2) and a real miner: two tenants, Alice and Bob, each with an API key. Bob tries to
// read, use or pre-empt what is Alice's; every probe he makes is counted, and so is every leak — a probe that
// succeeds where it must not, or a body carrying anything of Alice's (prompt, output, hash, URN, metadata).

const ALICE = "alice-key-0123456789abcdef";
const BOB = "bob-key-0123456789abcdef";
const SECRET_PROMPT = "Alice's quarterly numbers are 7, 11 and 13";
const DEFAULT_PROMPT = "Alice asks the shared session about lighthouses";
const METADATA_SECRET = "alice-metadata-codename-heron";

let router: Router;
let miner: Miner;
/** Strings of Alice's that no answer to Bob may contain. */
const secrets = new Set<string>([SECRET_PROMPT, DEFAULT_PROMPT, METADATA_SECRET]);
const probes: { what: string; status: number; leak: string | null }[] = [];

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A call as `key`, retried while the router answers 429 (the abuse limits are not what this file tests). */
async function call(key: string | null, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  for (;;) {
    const res = await api(router, path, { ...init, key });
    if (res.status !== 429) return res;
    await wait(Number(res.headers.get("retry-after") ?? 1) * 1000);
  }
}
const asAlice = (path: string, init: { method?: string; body?: unknown } = {}) => call(ALICE, path, init);

/**
 * Bob's probe: answered `status` (404 unless told), and nothing of Alice's in the body. Records the probe and
 * any leak; returns the response for further checks.
 */
async function bob(path: string, init: { method?: string; body?: unknown } = {}, status = 404) {
  const res = await call(BOB, path, init);
  const text = typeof res.body === "string" ? res.body : JSON.stringify(res.body);
  const found = [...secrets].find((s) => text.includes(s));
  const leak = found ? `body carries ${found.slice(0, 40)}` : res.status !== status ? `status ${res.status}, not ${status}` : null;
  probes.push({ what: `${init.method ?? (init.body === undefined ? "GET" : "POST")} ${path}`, status: res.status, leak });
  return res;
}
const leaksOf = (from: number) => probes.slice(from).filter((p) => p.leak);

async function session(key: string, body: Record<string, unknown>) {
  const res = await call(key, "/api/v1/sessions", { body: { deposit: 1_000_000, redundancy: 1, ...body } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  await until(async () => (await call(key, `/api/v1/sessions/${res.body.id}`)).body.usage?.connected_miners?.length >= 1, 30_000);
  return res.body.id as string;
}

/** Every SQLite file under the router's local Durable Object state. */
function sqliteFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith(".sqlite")) out.push(p);
    }
  };
  walk(router.persistDir);
  return out;
}

beforeAll(async () => {
  router = await startRouter({ vars: { API_KEYS: `alice:${ALICE},bob:${BOB}` } });
  miner = await startMiner(router.url, { name: "tenancy", concurrency: 2 });
  await miner.waitFor("ready", undefined, 120_000);
});

afterAll(async () => {
  await miner?.stop("SIGKILL");
  await router?.stop();
  const leaks = probes.filter((p) => p.leak);
  console.log(`tenancy probes: ${probes.length} cross-tenant probes, ${leaks.length} leaks`);
  for (const l of leaks) console.log(`  leak: ${l.what}: ${l.leak}`);
});

describe("finding 3: configured shared session ids are reserved", () => {
  it("no key creates default, delegate-1, validate-1 or factcheck-*; Alice's validate and factcheck still work", async () => {
    const reserved = {
      default: "DEFAULT_SESSION_ID",
      "delegate-1": "DELEGATE_SESSION_POOL",
      "validate-1": "VALIDATE_SESSION_POOL",
      "factcheck-standard": "FACTCHECK_STANDARD_SESSION",
      "factcheck-realtime": "FACTCHECK_REALTIME_SESSION",
    };
    const claims = [];
    for (const id of Object.keys(reserved)) claims.push(await bob("/api/v1/sessions", { body: { session_id: id, deposit: 1000 } }, 403));
    const validate = await asAlice("/api/v1/validate", { body: { task_request_input: "What is 2 + 2?", task_result_output: "4" } });
    expect(validate.status, JSON.stringify(validate.body)).toBe(200);
    expect(validate.body.replicas[0]).toMatchObject({ session_id: "validate-1", status: "ok" });
    const factcheck = await asAlice("/api/v1/factcheck", { body: { claim: "Water boils at 100 C at sea level." } });
    expect(factcheck.status, JSON.stringify(factcheck.body)).toBe(200);
    expect(factcheck.body.replicas[0]).toMatchObject({ session_id: "factcheck-standard", status: "ok" });
    // Created on first use as shared sessions, not Bob's; each of his claims refused, naming the var that reserves it.
    expect((await asAlice("/api/v1/sessions/validate-1")).body.owner).toBe("*");
    for (const [i, [id, name]] of Object.entries(reserved).entries()) {
      expect(claims[i].body.error?.code, id).toBe("forbidden");
      expect(claims[i].body.error.message).toContain(name);
    }
  });
});

let aliceSid = "";
let aliceTask = "";

describe("finding 2: another tenant's session is unknown to Bob", () => {
  it("Bob reads neither Alice's session, its list, its tasks nor uses it; Alice reads all of them", async () => {
    aliceSid = await session(ALICE, { name: "alice-books", metadata: { codename: METADATA_SECRET } });
    const done = await asAlice(`/api/v1/completions/${aliceSid}`, { body: { prompt: SECRET_PROMPT, max_tokens: 8 } });
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    aliceTask = done.body.task_id;
    secrets.add(done.body.choices[0].text);
    secrets.add(done.body.miners[0].hash);
    const mine = await asAlice(`/api/v1/tasks/${aliceSid}/${aliceTask}`);
    expect(mine.body.input.prompt).toBe(SECRET_PROMPT);
    expect((await asAlice(`/api/v1/sessions/${aliceSid}`)).body.config.metadata.codename).toBe(METADATA_SECRET);

    const from = probes.length;
    expect((await bob(`/api/v1/sessions/${aliceSid}`)).body.error.code).toBe("session_not_found");
    expect((await bob(`/api/v1/tasks/${aliceSid}`)).body.error.code).toBe("session_not_found");
    expect((await bob(`/api/v1/tasks/${aliceSid}/${aliceTask}`)).body.error.code).toBe("session_not_found");
    expect((await bob(`/api/v1/completions/${aliceSid}`, { body: { prompt: "mine now", max_tokens: 2 } })).body.error.code).toBe(
      "session_not_found",
    );
    await bob(`/api/v3/completions/${aliceSid}`, { body: { prompt: "mine now", max_tokens: 2 } });
    await bob("/api/v2/validate", { body: { session_id: aliceSid, claim: "x" } }, 502);
    await bob("/api/v3/delegate", { body: { objective: "x", consensus: { replicas: 1, session_pool: [aliceSid] } } }, 502);
    const list = await bob("/api/v1/sessions", {}, 200);
    expect(list.body.sessions.map((s: { id: string }) => s.id)).not.toContain(aliceSid);
    expect(list.body.sessions.every((s: { owner: string }) => s.owner === "*" || s.owner === "bob")).toBe(true);
    // An id Bob never saw answers the same way: nothing tells him Alice's exists.
    const none = await bob("/api/v1/tasks/no-such-session/1");
    expect(none.body.error.code).toBe("session_not_found");
    expect(leaksOf(from)).toEqual([]);
  });
});

describe("finding 4: private work is its owner's only", () => {
  it("Bob sees no hash, usage, size, URN, payload, key, allowlist or audit of Alice's private task", async () => {
    const minerAddr = miner.address()!.toLowerCase();
    const acl = await asAlice("/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: aliceSid, miners: [minerAddr] } });
    expect(acl.status, JSON.stringify(acl.body)).toBe(200);
    const res = await asAlice(`/api/v3/completions/${aliceSid}`, {
      body: { prompt: SECRET_PROMPT, max_tokens: 8, private: true, result_policy: "inline" },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const tid = res.body.task_id as string;
    const { prompt_urn, result_urn } = res.body.offchain;
    const task = (await asAlice(`/api/v1/tasks/${aliceSid}/${tid}`)).body;
    expect(task.payload.encrypted).toBe(true);
    for (const s of [prompt_urn, result_urn, task.result.hash, res.body.choices[0].text]) secrets.add(s);

    const from = probes.length;
    await bob(`/api/v1/tasks/${aliceSid}/${tid}`);
    await bob(`/api/v1/tasks/${aliceSid}?limit=500`);
    await bob(`/api/v3/offchain/payload/${encodeURIComponent(prompt_urn)}`);
    await bob(`/api/v3/offchain/result/${encodeURIComponent(result_urn)}`);
    await bob(`/api/v3/offchain/result/${encodeURIComponent(result_urn)}?decrypt=true`);
    await bob("/api/v1/auth/payload_enc_key/session", { body: { session_id: aliceSid } });
    await bob("/api/v1/auth/payload_enc_key/task", { body: { session_id: aliceSid, task_id: tid } });
    await bob(`/api/v1/auth/payload_allowlist/${aliceSid}`);
    await bob("/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: aliceSid, miners: [minerAddr], mode: "replace" } });
    await bob(`/api/v1/auth/payload_audit/${aliceSid}`);
    // The miner's public record: its sessions and its ledger name none of Alice's sessions or tasks to Bob.
    await until(async () =>
      (await asAlice(`/api/v1/miners/${minerAddr}/ledger`)).body.entries?.some((e: { task_id: string }) => e.task_id === tid),
    );
    const miners = await bob("/api/v1/miners", {}, 200);
    expect(miners.body.nodes.flatMap((n: { sessions: string[] }) => n.sessions)).not.toContain(aliceSid);
    const ledger = await bob(`/api/v1/miners/${minerAddr}/ledger?limit=500`, {}, 200);
    expect(ledger.body.entries.length).toBeGreaterThan(0);
    expect(ledger.body.entries.filter((e: { session_id: string | null }) => e.session_id === aliceSid)).toEqual([]);
    expect(JSON.stringify(ledger.body)).not.toContain('"owner"');
    // Alice still has all of it.
    expect((await asAlice(`/api/v3/offchain/result/${encodeURIComponent(result_urn)}?decrypt=true`)).body).toBe(res.body.choices[0].text);
    expect((await asAlice(`/api/v1/auth/payload_allowlist/${aliceSid}`)).body.session).toEqual([minerAddr]);
    expect(leaksOf(from)).toEqual([]);
  });
});

describe("finding 2: on a shared session each key sees its own tasks", () => {
  it("Bob's list, counts and reads of the default session hold his tasks only", async () => {
    const a = await asAlice("/api/v1/completions", { body: { prompt: DEFAULT_PROMPT, max_tokens: 8 } });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body.session_id).toBe("default");
    const b = await call(BOB, "/api/v1/completions", { body: { prompt: "Bob asks about harbours", max_tokens: 8 } });
    expect(b.status, JSON.stringify(b.body)).toBe(200);
    if (a.body.miners[0].hash !== b.body.miners[0].hash) secrets.add(a.body.miners[0].hash);
    if (a.body.choices[0].text !== b.body.choices[0].text) secrets.add(a.body.choices[0].text);

    const from = probes.length;
    const list = await bob("/api/v1/tasks/default?limit=500", {}, 200);
    expect(list.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([b.body.task_id]);
    expect((await bob(`/api/v1/tasks/default/${a.body.task_id}`)).body.error.code).toBe("task_not_found");
    expect((await bob(`/api/v1/tasks/default/${b.body.task_id}`, {}, 200)).body.input.prompt).toBe("Bob asks about harbours");
    const summary = await bob("/api/v1/sessions/default", {}, 200);
    expect(summary.body.usage).toMatchObject({ tasks_total: 1, used: b.body.usage.total_tokens });
    // Alice's own view of the same session: her task, not Bob's.
    const hers = await asAlice("/api/v1/tasks/default?limit=500");
    expect(hers.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([a.body.task_id]);
    const ledger = await bob(`/api/v1/miners/${miner.address()!.toLowerCase()}/ledger?limit=500`, {}, 200);
    const ids = ledger.body.entries
      .filter((e: { session_id: string | null }) => e.session_id === "default")
      .map((e: { task_id: string }) => e.task_id);
    expect(ids).not.toContain(a.body.task_id);
    expect(leaksOf(from)).toEqual([]);
  });
});

/** Registers a fresh wallet as a miner through the REST API and returns it with its token. */
async function minerToken() {
  const wallet = privateKeyToAccount(generatePrivateKey());
  const ch = await call(null, "/api/v1/miners/challenge", { body: { address: wallet.address } });
  const signature = await wallet.signMessage({ message: ch.body.message });
  const reg = await call(null, "/api/v1/miners/register", {
    body: { address: wallet.address, nonce: ch.body.nonce, signature, models: ["edge/tiny-gpt2"], device: "cpu", capacity: 1 },
  });
  expect(reg.status, JSON.stringify(reg.body)).toBe(200);
  return { wallet, token: reg.body.token as string };
}

/** The HTTP status a WebSocket upgrade gets. */
function upgradeStatus(path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${router.url.replace("http", "ws")}${path}`, { headers: { authorization: `Bearer ${token}` } });
    ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    ws.on("open", () => {
      ws.close();
      resolve(101);
    });
    ws.on("error", reject);
  });
}

describe("finding 7: made-up session ids and oversized sessions", () => {
  it("20 made-up session ids, through every route that names a session, leave no SQLite file behind", async () => {
    const { wallet, token } = await minerToken();
    const asMiner = (path: string, body?: unknown) => call(null, path, { body, headers: { authorization: `Bearer ${token}` } });
    const before = sqliteFiles().length;
    expect(before).toBeGreaterThan(0);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const sid = `made-up-${i}-${crypto.randomUUID().slice(0, 8)}`;
      const urn = `urn:edge:payload:${sid}:1:${"ab".repeat(32)}`;
      const content = new TextEncoder().encode("forged");
      const content_hash = `0x${await sha256Hex(content)}` as `0x${string}`;
      const signature = await wallet.signTypedData(
        offchainResultTypedData({ session: sid, task: "1", miner: wallet.address, content: content_hash }, ROUTER_DOMAIN),
      );
      const answers = await Promise.all([
        bob(`/api/v1/sessions/${sid}`),
        bob(`/api/v1/tasks/${sid}`),
        bob(`/api/v1/tasks/${sid}/1`),
        bob(`/api/v1/completions/${sid}`, { body: { prompt: "hi", max_tokens: 1 } }),
        bob(`/api/v2/completions/${sid}`, { body: { prompt: "hi", max_tokens: 1 } }),
        bob(`/api/v3/completions/${sid}`, { body: { prompt: "hi", max_tokens: 1, payload_policy: "offchain" } }),
        bob("/api/v1/auth/payload_enc_key/session", { body: { session_id: sid } }),
        bob(`/api/v1/auth/payload_allowlist/${sid}`),
        bob(`/api/v1/auth/payload_audit/${sid}`),
        bob(
          `/api/v3/offchain/result/${encodeURIComponent(urn.replace("payload", "result").replace(":1:", `:1:${wallet.address.toLowerCase()}:`))}`,
        ),
        asMiner(`/api/v3/offchain/payload/${encodeURIComponent(urn)}`),
        asMiner("/api/v3/offchain/result", { session_id: sid, task_id: "1", content: toBase64(content), content_hash, signature }),
      ]);
      statuses.push(...answers.map((a) => a.status), await upgradeStatus(`/api/v1/sessions/${sid}/connect`, token));
    }
    expect(statuses.every((s) => s >= 400 && s < 500)).toBe(true);
    const after = sqliteFiles().length;
    console.log(`made-up session ids: 20 ids × 13 routes = ${statuses.length} requests; SQLite files ${before} → ${after}`);
    expect(after).toBe(before);
  });

  it("refuses a deposit above MAX_SESSION_DEPOSIT and oversized metadata, with the limit named", async () => {
    const over = await call(ALICE, "/api/v1/sessions", { body: { deposit: 1e12 } });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({ code: "invalid_request", details: [{ path: "deposit" }] });
    expect(over.body.error.message).toMatch(/MAX_SESSION_DEPOSIT/);
    expect((await call(ALICE, "/api/v1/sessions", { body: { deposit: 100_000_000 } })).status).toBe(201);

    const manyKeys = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i]));
    const tooMany = await call(ALICE, "/api/v1/sessions", { body: { deposit: 10, metadata: manyKeys } });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.details).toEqual([expect.objectContaining({ path: "metadata", message: expect.stringMatching(/32 keys/) })]);
    const bulky = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`k${i}`, "x".repeat(1000)]));
    const tooBig = await call(ALICE, "/api/v1/sessions", { body: { deposit: 10, metadata: bulky } });
    expect(tooBig.status).toBe(400);
    expect(tooBig.body.error.details).toEqual([
      expect.objectContaining({ path: "metadata", message: expect.stringMatching(/4096 bytes/) }),
    ]);
    // 1 MB of metadata (1,000 keys of 1,000 characters) never becomes a session.
    const megabyte = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`key-${i}`, "y".repeat(1000)]));
    const huge = await call(ALICE, "/api/v1/sessions", { body: { deposit: 10, metadata: megabyte } });
    expect(huge.status).toBeGreaterThanOrEqual(400);
    expect(huge.status).toBeLessThan(500);
    const fits = await call(ALICE, "/api/v1/sessions", { body: { deposit: 10, metadata: { k0: 1, note: "x".repeat(1000) } } });
    expect(fits.status).toBe(201);
  });
});

describe("summary", () => {
  it("no probe of Bob's leaked anything of Alice's", () => {
    expect(probes.length).toBeGreaterThan(200);
    expect(probes.filter((p) => p.leak)).toEqual([]);
  });
});
