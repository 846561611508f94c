import { randomBytes } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, TEST_VARS, until } from "../helpers/network.ts";

// Managed API keys, budgets, rate limits and usage against the real router (wrangler dev: real KeyRegistry and
// UsageMeter objects) and a real miner running the built-in model: what an admin, a tenant, another tenant and
// a leaked key can do, and whether the usage the router reports is the usage its answers carried.

const ADMIN = TEST_VARS.ADMIN_SECRET;
const MODEL = "edge/tiny-gpt2";

let router: Router;
let weak: Router;
let miner: Miner;

type Res = { status: number; body: any; headers: Headers };

const admin = (path: string, init: { method?: string; body?: unknown } = {}) => api(router, `/admin${path}`, { ...init, key: ADMIN });

async function newKey(owner: string, settings: Record<string, unknown> = {}) {
  const res = await admin("/keys", { body: { owner, ...settings } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { key: string; id: string; [k: string]: unknown };
}

/** A session of `key`'s owner that the miner has joined. */
async function sessionOf(key: string): Promise<string> {
  const res = await api(router, "/api/v1/sessions", { key, body: { deposit: 1_000_000, redundancy: 1 } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const sid = res.body.id as string;
  await until(async () => (await api(router, `/api/v1/sessions/${sid}`, { key })).body.usage?.connected_miners?.length >= 1, 60_000);
  return sid;
}

const complete = (key: string, sid: string, prompt: string, extra: Record<string, unknown> = {}) =>
  api(router, `/api/v1/completions/${sid}`, { key, body: { prompt, max_tokens: 4, model: MODEL, ...extra } });

/** The router's JSON request log lines (middleware/request-log.ts) from wrangler dev's output. */
function logLines(): Record<string, any>[] {
  return router
    .log()
    .split("\n")
    .map((l) => l.slice(l.indexOf("{")))
    .filter((l) => l.startsWith('{"msg":"request"'))
    .map((l) => JSON.parse(l));
}

beforeAll(async () => {
  [router, weak] = await Promise.all([
    startRouter(),
    // Production, every other secret strong: only the admin secret is unfit.
    startRouter({
      vars: {
        ROUTER_ENV: "production",
        ROUTER_ADDRESS: `0x${randomBytes(20).toString("hex")}`,
        API_KEYS: `dev:${randomBytes(24).toString("base64url")}`,
        ADMIN_SECRET: "admin",
      },
      allowConfigError: true,
    }),
  ]);
  miner = await startMiner(router.url, { name: "keys", concurrency: 4 });
  await miner.waitFor("ready", undefined, 120_000);
});

afterAll(async () => {
  await miner?.stop("SIGKILL");
  await Promise.all([router?.stop(), weak?.stop()]);
});

describe("the admin API", () => {
  it("is refused without the admin secret, with a wrong one, or with an API key", async () => {
    const tenant = await newKey("gate");
    for (const key of [null, "dev-key", tenant.key, `${ADMIN}x`]) {
      const res = await api(router, "/admin/keys", { key });
      expect(res.status, String(key)).toBe(401);
      expect(res.body.error.code).toBe("unauthorized");
    }
  });

  it("a router with a weak ADMIN_SECRET refuses to serve at all (503 configuration_error naming it)", async () => {
    for (const path of ["/admin/keys", "/api/v1/ping"]) {
      const res = await api(weak, path, { key: "admin" });
      expect(res.status).toBe(503);
      expect(res.body.error).toMatchObject({ code: "configuration_error", details: { variables: ["ADMIN_SECRET"] } });
    }
  });
});

describe("a key's life", () => {
  it("created by the admin it works at once, is listed without its material, rotates and revokes", async () => {
    const sid = await sessionOf((await newKey("alice")).key);
    const made = await newKey("alice", { name: "ci" });
    expect(made.key).toMatch(/^ek_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const first = await complete(made.key, sid, "Hello there, how are you");
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const listed = await admin("/keys?owner=alice");
    expect(listed.status).toBe(200);
    expect(listed.body.data.find((k: { id: string }) => k.id === made.id)).toMatchObject({ name: "ci", prefix: made.prefix });
    expect(JSON.stringify(listed.body)).not.toContain(made.key.slice(-43));

    const rotated = await admin(`/keys/${made.id}/rotate`, { method: "POST" });
    expect(rotated.status).toBe(200);
    expect(rotated.body.id).toBe(made.id);
    expect((await api(router, "/api/v1/keys", { key: made.key })).status).toBe(401);
    expect((await complete(rotated.body.key, sid, "Hello again, how are you")).status).toBe(200);

    expect((await admin(`/keys/${made.id}/revoke`, { method: "POST" })).status).toBe(200);
    const revoked = await complete(rotated.body.key, sid, "Hello once more, anyone");
    expect(revoked.status).toBe(401);
    expect(revoked.body.error.message).toMatch(/revoked/);
  });

  it("an expired key is refused", async () => {
    const made = await newKey("alice", { expires_at: Math.floor(Date.now() / 1000) + 2 });
    expect((await api(router, "/api/v1/keys", { key: made.key })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2500));
    const res = await api(router, "/api/v1/keys", { key: made.key });
    expect(res.status).toBe(401);
    expect(res.body.error.message).toMatch(/expired/);
  });

  it("a key outside its allowed models is refused: 403 on REST, model_not_found on the gateway", async () => {
    const owner = await newKey("carl");
    const sid = await sessionOf(owner.key);
    const narrow = await newKey("carl", { allowed_models: ["edge/some-other-model"] });
    const rest = await complete(narrow.key, sid, "Which model are you");
    expect(rest.status).toBe(403);
    expect(rest.body.error).toMatchObject({ code: "model_not_allowed", details: { allowed_models: ["edge/some-other-model"] } });
    const gateway = await api(router, "/openai/v1/chat/completions", {
      key: narrow.key,
      body: { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 4 },
    });
    expect(gateway.status).toBe(404);
    expect(gateway.body.error.code).toBe("model_not_found");
    const models = await api(router, "/openai/v1/models", { key: narrow.key });
    expect(models.body.data.map((m: { id: string }) => m.id)).not.toContain(MODEL);
  });
});

describe("limits", () => {
  it("a key's rate limit answers 429 rate_limited with retry-after", async () => {
    const made = await newKey("dora", { rate_limit: 3 });
    const answers: Res[] = [];
    for (let i = 0; i < 5; i++) answers.push(await api(router, "/api/v1/keys", { key: made.key }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
    expect(answers[3].body.error.code).toBe("rate_limited");
    const retry = Number(answers[3].headers.get("retry-after"));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
  });

  it("a used-up budget answers 402 budget_exhausted and submits nothing", async () => {
    const owner = await newKey("erin");
    const sid = await sessionOf(owner.key);
    const made = await newKey("erin", { token_budget: 25 });
    let used = 0;
    let refused: Res | null = null;
    for (let i = 0; i < 10 && !refused; i++) {
      const res = await complete(made.key, sid, `Tell me a story number ${i}`);
      if (res.status === 402) refused = res;
      else {
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        used += res.body.usage.prompt_tokens + res.body.usage.completion_tokens;
      }
    }
    expect(refused, "the budget never ran out").not.toBeNull();
    expect(refused!.body.error).toMatchObject({ code: "budget_exhausted", details: { token_budget: 25 } });
    expect(used).toBeGreaterThanOrEqual(25);
    const tasks = (await api(router, `/api/v1/tasks/${sid}`, { key: owner.key })).body.count;
    expect((await complete(made.key, sid, "Just one more story")).status).toBe(402);
    expect((await api(router, `/api/v1/tasks/${sid}`, { key: owner.key })).body.count).toBe(tasks);
    const key = await admin(`/keys/${made.id}`);
    expect(key.body.tokens_used).toBe(used);
  });
});

describe("tenancy", () => {
  it("tenant B can neither list, read, rotate nor revoke A's keys, nor read A's usage", async () => {
    const a = await newKey("tenant-a");
    const b = await newKey("tenant-b");
    const sid = await sessionOf(a.key);
    expect((await complete(a.key, sid, "Tenant A's private question")).status).toBe(200);
    const listed = await api(router, "/api/v1/keys", { key: b.key });
    expect(listed.body.data.map((k: { id: string }) => k.id)).toEqual([b.id]);
    for (const [method, path] of [
      ["GET", `/api/v1/keys/${a.id}`],
      ["POST", `/api/v1/keys/${a.id}/rotate`],
      ["POST", `/api/v1/keys/${a.id}/revoke`],
    ]) {
      expect((await api(router, path, { method, key: b.key })).status, path).toBe(404);
    }
    // B's key may not mint keys for A: the owner is never a parameter of self-service.
    expect((await api(router, "/api/v1/keys", { key: b.key, body: { owner: "tenant-a" } })).status).toBe(400);
    const usage = await api(router, `/api/v1/usage?key_id=${a.id}&bucket=minute`, { key: b.key });
    expect(usage.status).toBe(200);
    expect(usage.body).toMatchObject({ owner: "tenant-b", data: [], totals: { requests: 0 } });
    expect((await api(router, "/openai/v1/usage", { key: b.key })).body.owner).toBe("tenant-b");
    // A's key still works and A sees its usage.
    await until(async () => (await api(router, "/api/v1/usage?bucket=minute", { key: a.key })).body.totals.requests >= 1, 10_000);
  });
});

describe("usage", () => {
  it("after a burst of 20 concurrent requests (some streamed) the usage equals the sum of the answers' usage", async () => {
    const made = await newKey("frank");
    const sid = await sessionOf(made.key);
    const streamed = async (i: number) => {
      const res = await fetch(`${router.url}/api/v1/completions/${sid}`, {
        method: "POST",
        headers: { authorization: `Bearer ${made.key}`, "content-type": "application/json" },
        body: JSON.stringify({ prompt: `Streamed question ${i}`, max_tokens: 4, model: MODEL, stream: true }),
      });
      const chunks = (await res.text())
        .split("\n")
        .filter((l) => l.startsWith("data:") && !l.includes("[DONE]"))
        .map((l) => JSON.parse(l.slice(5)));
      return { status: res.status, usage: chunks.find((c) => c.usage)?.usage };
    };
    const plain = async (i: number) => {
      const res = await complete(made.key, sid, `Plain question number ${i}`);
      return { status: res.status, usage: res.body.usage };
    };
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 5 === 0 ? streamed(i) : plain(i))));
    for (const a of answers) expect(a.status).toBe(200);
    const sum = (k: "prompt_tokens" | "completion_tokens") => answers.reduce((n, a) => n + a.usage[k], 0);
    const want = { requests: 20, prompt_tokens: sum("prompt_tokens"), completion_tokens: sum("completion_tokens"), failures: 0 };
    expect(want.completion_tokens).toBeGreaterThan(0);
    const report = await until(async () => {
      const r = await api(router, "/api/v1/usage?bucket=minute", { key: made.key });
      return r.body.totals.requests >= 20 && r;
    }, 15_000);
    expect(report.body.totals).toMatchObject(want);
    const day = await api(router, `/api/v1/usage?bucket=day&key_id=${made.id}&model=${encodeURIComponent(MODEL)}`, { key: made.key });
    expect(day.body.totals).toMatchObject(want);
    expect(day.body.data).toHaveLength(1);
    expect(day.body.data[0]).toMatchObject({ key_id: made.id, model: MODEL, requests: 20 });
    expect(day.body.data[0].latency_ms_max).toBeGreaterThan(0);
    const all = await admin("/usage?bucket=day");
    expect(all.body.data.filter((r: { owner: string }) => r.owner === "frank")).toHaveLength(1);
    expect(all.body.owners).toEqual(expect.arrayContaining(["frank", "tenant-a", "dev"]));
  });

  it("gateway answers (plain and streamed) are metered once each, with the answers' usage", async () => {
    const made = await newKey("hank");
    const chat = (stream: boolean) =>
      fetch(`${router.url}/openai/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${made.key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: MODEL,
          messages: [{ role: "user", content: "Say something short" }],
          max_tokens: 4,
          stream,
          ...(stream ? { stream_options: { include_usage: true } } : {}),
        }),
      });
    const usages = [];
    for (const stream of [false, true, false]) {
      const res = await chat(stream);
      expect(res.status, await res.clone().text()).toBe(200);
      if (!stream) usages.push((await res.json()).usage);
      else {
        const chunks = (await res.text())
          .split("\n")
          .filter((l) => l.startsWith("data:") && !l.includes("[DONE]"))
          .map((l) => JSON.parse(l.slice(5)));
        usages.push(chunks.find((c) => c.usage)?.usage);
      }
    }
    const want = {
      requests: 3,
      prompt_tokens: usages.reduce((n, u) => n + u.prompt_tokens, 0),
      completion_tokens: usages.reduce((n, u) => n + u.completion_tokens, 0),
    };
    const report = await until(async () => {
      const r = await api(router, "/openai/v1/usage?bucket=minute", { key: made.key });
      return r.body.totals?.requests >= 3 && r;
    }, 15_000);
    expect(report.body.totals).toMatchObject(want);
  });

  it("an MCP tool call's completion is metered once, as the MCP request, with its answer's usage", async () => {
    const made = await newKey("ivan");
    const sid = await sessionOf(made.key);
    const transport = new StreamableHTTPClientTransport(new URL(`${router.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${made.key}` } },
    });
    const client = new Client({ name: "keys-it", version: "1.0.0" });
    await client.connect(transport);
    try {
      const args = { prompt: "The network of small machines", max_tokens: 4, session_id: sid, model: MODEL };
      const res = (await client.callTool({ name: "cortensor_completions", arguments: args }, undefined, {
        timeout: 120_000,
      })) as CallToolResult;
      expect(res.isError, JSON.stringify(res.content)).toBeFalsy();
      const usage = (res.structuredContent as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
      const report = await until(async () => {
        const r = await api(router, "/api/v1/usage?bucket=minute", { key: made.key });
        return r.body.totals.requests >= 1 && r;
      }, 15_000);
      await new Promise((r) => setTimeout(r, 500)); // nothing else arrives late
      const again = await api(router, "/api/v1/usage?bucket=minute", { key: made.key });
      expect(again.body.totals).toEqual(report.body.totals);
      expect(report.body.totals).toMatchObject({
        requests: 1,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
      });
      expect(report.body.data[0]).toMatchObject({ key_id: made.id, model: MODEL });
    } finally {
      await client.close().catch(() => {});
    }
  });

  it("writes one valid JSON log line per request with its fields, and no secret", async () => {
    const made = await newKey("gina");
    const sid = await sessionOf(made.key);
    const res = await complete(made.key, sid, "Log this request please");
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id")!;
    const line = await until(async () => logLines().find((l) => l.request_id === id), 10_000);
    expect(line).toMatchObject({
      msg: "request",
      key_id: made.id,
      owner: "gina",
      method: "POST",
      route: "/api/v1/completions/:sessionId?",
      status: 200,
      model: MODEL,
      prompt_tokens: res.body.usage.prompt_tokens,
      completion_tokens: res.body.usage.completion_tokens,
      error: null,
    });
    expect(line.latency_ms).toBeGreaterThan(0);
    expect(typeof line.cost).toBe("number");
    const refused = await api(router, "/api/v1/keys", { key: `ek_${"0".repeat(16)}_${"A".repeat(43)}` });
    const failed = await until(async () => logLines().find((l) => l.request_id === refused.headers.get("x-request-id")), 10_000);
    expect(failed).toMatchObject({ status: 401, error: "unauthorized", key_id: null });
    const text = router.log();
    expect(text).not.toContain(made.key);
    expect(text).not.toContain(ADMIN);
    expect(text).not.toContain("Log this request please");
  });
});
