import { createHmac, randomBytes } from "node:crypto";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { deriveSessionKey, deriveTaskKey, fromHex, openPayload, toHex } from "../../shared/payload-crypto.ts";
import { api, type Router, startRouter, until } from "../helpers/network.ts";
import { openRaw } from "../helpers/raw-miner.ts";

// Secrets, errors and abuse limits (issue 11, finding 1 and the router parts of findings 7 and 8), tried as
// an attacker would against real routers (wrangler dev) and hand-driven miners:
//   - `dev`:  the test harness's router (local development, fresh random secrets);
//   - `prod`: a production router (ROUTER_ENV=production, strong secrets) with low rate limits;
//   - `published`: a production router given the development secrets that were once committed in wrangler.toml.

/** The development values committed in wrangler.toml until issue 11: public, so worthless as secrets. */
const PUBLISHED = {
  API_KEYS: "dev:dev-key",
  MINER_TOKEN_SECRET: "dev-miner-token-secret-change-me",
  PAYLOAD_KEY_SEEDS: "1:c3e84a4ff4c4fde145f254cd82bf885fbc0acc7569b4818d7ac67082e6f1423a",
};
const PUBLISHED_SEED = fromHex(PUBLISHED.PAYLOAD_KEY_SEEDS.slice(2));

const KEY_1 = randomBytes(24).toString("base64url");
const KEY_2 = randomBytes(24).toString("base64url");
/** The payload test's own key on `prod`, so its requests count against no limit the rate-limit tests measure. */
const KEY_3 = randomBytes(24).toString("base64url");
/** Requests per 10 s on the `prod` router. */
const LIMIT = { key: 5, miner: 5, ip: 3, auth: 3 };
const RETRIEVER = "ftp://retriever.corp.internal.invalid/search";

let dev: Router;
let prod: Router;
let published: Router;

beforeAll(async () => {
  [dev, prod, published] = await Promise.all([
    startRouter({ vars: { FACTCHECK_RETRIEVER_URL: RETRIEVER } }),
    startRouter({
      vars: {
        ROUTER_ENV: "production",
        ROUTER_ADDRESS: `0x${randomBytes(20).toString("hex")}`,
        API_KEYS: `one:${KEY_1},two:${KEY_2},three:${KEY_3}`,
        MINER_TOKEN_SECRET: randomBytes(32).toString("hex"),
        PAYLOAD_KEY_SEEDS: `1:${randomBytes(32).toString("hex")}`,
      },
      rateLimits: {
        RATE_LIMIT_KEY: LIMIT.key,
        RATE_LIMIT_MINER: LIMIT.miner,
        RATE_LIMIT_IP: LIMIT.ip,
        RATE_LIMIT_AUTH_FAILURES: LIMIT.auth,
      },
    }),
    startRouter({
      vars: { ROUTER_ENV: "production", ROUTER_ADDRESS: `0x${randomBytes(20).toString("hex")}`, ...PUBLISHED },
      allowConfigError: true,
    }),
  ]);
});

afterAll(async () => {
  await Promise.all([dev?.stop(), prod?.stop(), published?.stop()]);
});

/** Registers a fresh wallet (challenge, signature, register) from `ip`; returns the miner token. */
async function register(router: Router, ip: string): Promise<string> {
  const wallet = privateKeyToAccount(generatePrivateKey());
  const headers = { "CF-Connecting-IP": ip };
  const ch = await api(router, "/api/v1/miners/challenge", { key: null, headers, body: { address: wallet.address } });
  expect(ch.status, JSON.stringify(ch.body)).toBe(200);
  const signature = await wallet.signMessage({ message: ch.body.message });
  const reg = await api(router, "/api/v1/miners/register", {
    key: null,
    headers,
    body: { address: wallet.address, nonce: ch.body.nonce, signature, models: ["edge/tiny-gpt2"], device: "cpu", capacity: 1 },
  });
  expect(reg.status, JSON.stringify(reg.body)).toBe(200);
  return reg.body.token as string;
}

/** The HTTP status a WebSocket upgrade gets (101 when it opens). */
function upgradeStatus(router: Router, path: string, token: string): Promise<number> {
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

/** Asserts the house error envelope and returns its code. */
function envelope(res: { status: number; body: any; headers: Headers }): string {
  expect(res.body, JSON.stringify(res.body)).toMatchObject({
    request_id: res.headers.get("x-request-id"),
    error: { code: expect.any(String), message: expect.any(String) },
  });
  expect(res.body.error).toHaveProperty("details");
  return res.body.error.code;
}

/** Sends `n` requests one after another; returns the answers. */
async function burst(n: number, send: () => Promise<{ status: number; body: any; headers: Headers }>) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await send());
  return out;
}

/** Some answers are 429 rate_limited with Retry-After, and at most two windows' worth were let through first. */
function expectLimited(answers: { status: number; body: any; headers: Headers }[], limit: number) {
  const first = answers.findIndex((a) => a.status === 429);
  expect(first, answers.map((a) => a.status).join(",")).toBeGreaterThanOrEqual(Math.min(limit, 1));
  expect(first).toBeLessThanOrEqual(2 * limit);
  for (const a of answers.filter((x) => x.status === 429)) {
    expect(envelope(a)).toBe("rate_limited");
    expect(Number(a.headers.get("retry-after"))).toBeGreaterThan(0);
  }
}

describe("finding 1: no development secret reaches production", () => {
  it("a production router given the once-committed development secrets refuses every request, ping included", async () => {
    const answers = await Promise.all([
      api(published, "/api/v1/ping", { key: null }),
      api(published, "/api/v1/completions", { key: "dev-key", body: { prompt: "hello", max_tokens: 1 } }),
      api(published, "/api/v1/miners/challenge", { key: null, body: { address: `0x${"1".repeat(40)}` } }),
    ]);
    for (const res of answers) {
      expect(res.status).toBe(503);
      expect(envelope(res)).toBe("configuration_error");
      // Which variables are wrong, never their values or the keys' owners.
      expect(res.body.error.details.variables).toEqual(["API_KEYS", "MINER_TOKEN_SECRET", "PAYLOAD_KEY_SEEDS"]);
      expect(JSON.stringify(res.body)).not.toMatch(/dev-key|change-me|c3e84a4f/);
    }
    // The operator reads why in the router's log, once per isolate, not once per request (a file change under
    // wrangler dev reloads the Worker into a new isolate, which logs again).
    for (let i = 0; i < 10; i++) expect((await api(published, "/api/v1/ping", { key: null })).status).toBe(503);
    await until(async () => published.log().includes("router refuses to serve"), 5000);
    expect(published.log()).toContain("MINER_TOKEN_SECRET is the published development secret");
    expect(published.log().match(/router refuses to serve/g)!.length).toBeLessThanOrEqual(2);
    // The same router with strong secrets serves (the `prod` router below): production is possible, not blocked.
    expect((await api(prod, "/api/v1/ping", { key: null })).status).toBe(200);
  });

  it("a miner token signed with the once-committed MINER_TOKEN_SECRET connects nowhere", async () => {
    // A production router with a strong secret: its own token connects (the control: the claims are valid) ...
    const token = await register(prod, "192.0.2.10");
    const body = token.slice(0, token.lastIndexOf("."));
    const forged = `${body}.${createHmac("sha256", PUBLISHED.MINER_TOKEN_SECRET).update(body).digest("base64url")}`;
    expect(await upgradeStatus(prod, "/api/v1/miners/connect", token)).toBe(101);
    // ... the same claims signed with the published secret do not ...
    expect(await upgradeStatus(prod, "/api/v1/miners/connect", forged)).toBe(401);
    // ... and the one production router that would take that signature, one run with the published secret, does
    // not serve at all: the config guard answers 503 before any token is looked at.
    expect(await upgradeStatus(published, "/api/v1/miners/connect", forged)).toBe(503);
  });

  it("a private payload sealed by a production router does not open with keys derived from the once-committed seed", async () => {
    const owner = (path: string, body?: unknown) => api(prod, path, { key: KEY_3, ...(body !== undefined ? { body } : {}) });
    const created = await owner("/api/v1/sessions", { deposit: 1_000_000, model: "edge/tiny-gpt2", max_miners: 1 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const sid = created.body.id as string;
    // A hand-driven miner serves the session, so the router seals a real private prompt for it.
    const token = await register(prod, "192.0.2.30");
    const pool = await openRaw(prod.url, "/api/v1/miners/connect", token);
    const channel = await (async () => {
      await pool.next((m) => m.type === "sessions" && m.sessions.some((s: { session_id: string }) => s.session_id === sid));
      return openRaw(prod.url, `/api/v1/sessions/${sid}/connect`, token);
    })();
    try {
      expect(channel.status, JSON.stringify(channel.refusal)).toBe(101);
      const prompt = "The secret plan is";
      void owner(`/api/v3/completions/${sid}`, { prompt, max_tokens: 4, private: true, timeout: 20 }).catch(() => {});
      const assign = await channel.next((m) => m.type === "assign" && m.payload?.prompt_urn);
      const tid = assign.task_id as string;
      const raw = await fetch(`${prod.url}/api/v3/offchain/payload/${encodeURIComponent(assign.payload.prompt_urn)}`, {
        headers: { authorization: `Bearer ${KEY_3}` },
      });
      expect(raw.status).toBe(200);
      expect(raw.headers.get("x-payload-encrypted")).toBe("1");
      const sealed = new Uint8Array(await raw.arrayBuffer());
      const ctx = { kind: "prompt" as const, sessionId: sid, taskId: tid };
      // The owner's task key opens it (the control) ...
      const owners = await owner("/api/v1/auth/payload_enc_key/task", { session_id: sid, task_id: tid });
      expect(owners.status, JSON.stringify(owners.body)).toBe(200);
      expect(new TextDecoder().decode(await openPayload(fromHex(owners.body.key), sealed, ctx))).toContain(prompt);
      // ... the key an attacker derives from the published seed does not.
      const guessed = await deriveTaskKey(await deriveSessionKey(PUBLISHED_SEED, sid), sid, tid);
      expect(toHex(guessed)).not.toBe(owners.body.key);
      await expect(openPayload(guessed, sealed, ctx)).rejects.toThrow();
      channel.send({ type: "release", task_id: tid, reason: "test done" });
    } finally {
      channel.close();
      pool.close();
    }
    // And a production router given the published seed seals nothing: it refuses the completion outright.
    const refused = await api(published, "/api/v3/completions", { key: "dev-key", body: { prompt: "x", private: true } });
    expect(refused.status).toBe(503);
    expect(envelope(refused)).toBe("configuration_error");
  });
});

describe("finding 7 (rate limits): 429 rate_limited with Retry-After", () => {
  it("per API key: one key over its limit is refused, another key is not", async () => {
    const answers = await burst(3 * LIMIT.key, () => api(prod, "/api/v1/info", { key: KEY_1 }));
    expect(answers.filter((a) => a.status === 200).length).toBeGreaterThanOrEqual(LIMIT.key);
    expectLimited(answers, LIMIT.key);
    expect((await api(prod, "/api/v1/info", { key: KEY_2 })).status).toBe(200);
  });

  it("per IP on the unauthenticated miner routes: one address over its limit is refused, another is not", async () => {
    const challenge = (ip: string) =>
      api(prod, "/api/v1/miners/challenge", { key: null, headers: { "CF-Connecting-IP": ip }, body: { address: `0x${"2".repeat(40)}` } });
    const answers = await burst(3 * LIMIT.ip, () => challenge("203.0.113.7"));
    expectLimited(answers, LIMIT.ip);
    expect((await challenge("203.0.113.8")).status).toBe(200);
  });

  it("per IP on failed authentication: guessing keys turns into 429", async () => {
    const guess = (ip: string) =>
      api(prod, "/api/v1/sessions", { key: randomBytes(24).toString("base64url"), headers: { "CF-Connecting-IP": ip } });
    const answers = await burst(3 * LIMIT.auth, () => guess("198.51.100.4"));
    expect(answers[0].status).toBe(401);
    expectLimited(answers, LIMIT.auth);
    expect((await guess("198.51.100.5")).status).toBe(401);
  });

  it("per miner token: one miner over its limit is refused, another miner is not", async () => {
    const [token, other] = [await register(prod, "192.0.2.20"), await register(prod, "192.0.2.21")];
    const keyRequest = (t: string) =>
      api(prod, "/api/v1/auth/payload_enc_key/session", {
        key: null,
        headers: { authorization: `Bearer ${t}` },
        body: { session_id: "nope" },
      });
    const answers = await burst(3 * LIMIT.miner, () => keyRequest(token));
    expect(answers[0].status).not.toBe(429);
    expectLimited(answers, LIMIT.miner);
    expect((await keyRequest(other)).status).not.toBe(429);
  });
});

describe("finding 8 (errors, request ids, body limits)", () => {
  it("the router makes every request id; a client's own id is only echoed, apart", async () => {
    const chosen = "attacker-chosen-id";
    const ok = await api(dev, "/api/v1/ping", { key: null, headers: { "X-Request-ID": chosen } });
    const failed = await api(dev, "/api/v1/sessions/none-such", { headers: { "X-Request-ID": chosen } });
    for (const res of [ok, failed]) {
      expect(res.headers.get("x-request-id")).not.toBe(chosen);
      expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
      expect(res.headers.get("x-client-request-id")).toBe(chosen);
    }
    expect(envelope(failed)).toBeTruthy();
    expect(failed.body.request_id).not.toBe(chosen);
  });

  it("an internal fault answers a generic message; the details go to the log under the request id", async () => {
    const res = await api(dev, "/api/v1/factcheck", { body: { claim: "The sky is green", mode: "realtime" } });
    expect(res.status).toBe(502);
    expect(envelope(res)).toBe("retriever_failed");
    expect(JSON.stringify(res.body)).not.toMatch(/corp\.internal|ftp:|reference =|Fetch API|TypeError/);
    await until(async () => dev.log().includes(`request ${res.body.request_id}`), 5000);
    expect(dev.log()).toContain(RETRIEVER);
  });

  it("body limits per route: v2/v3 completions take PAYLOAD_MAX_BYTES, delegate / validate and the rest far less", async () => {
    const mib = (n: number) => "x".repeat(Math.round(n * 1024 * 1024));
    // 1.5 MiB: past the limit of v2/v3 delegate and validate (1 MiB), within v2/v3 completions' (8 MiB).
    for (const path of ["/api/v2/delegate", "/api/v3/delegate", "/api/v2/validate", "/api/v3/validate", "/api/v1/factcheck"]) {
      const res = await api(dev, path, { body: { objective: mib(1.5), claim: "c", task_request_input: "x" } });
      expect(res.status, path).toBe(413);
      expect(envelope(res)).toBe("payload_too_large");
      expect(res.body.error.details.max_bytes).toBeLessThanOrEqual(1024 * 1024);
    }
    // The completion route reads the same 1.5 MiB and judges the body itself (max_tokens is out of range).
    const v3 = await api(dev, "/api/v3/completions", { body: { prompt: mib(1.5), max_tokens: -1 } });
    expect(v3.status).toBe(400);
    expect(envelope(v3)).toBe("invalid_request");
    // Past PAYLOAD_MAX_BYTES, even v3 completions refuse; sessions take 64 KiB.
    expect((await api(dev, "/api/v3/completions", { body: { prompt: mib(8.5) } })).status).toBe(413);
    const session = await api(dev, "/api/v1/sessions", { body: { metadata: { note: mib(0.1) } } });
    expect(session.status).toBe(413);
    expect(session.body.error.details.max_bytes).toBe(64 * 1024);
  });
});
