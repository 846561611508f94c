import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { keyRegistry, usageMeter } from "../../durable-objects/stubs.ts";
import { mintSecret, parseManagedKey, sha256Hex } from "../../workers/lib/keys.ts";
import { createSession, env, json, MinerSet, sleep, uniq, waitFor } from "./helpers.ts";

// Managed API keys in the Workers runtime (real KeyRegistry and UsageMeter objects, the real router, test miners):
// hashing and lookup, rotate/revoke, expiry, allowed models, rate limits and budgets, and self-service bounds.

const router = (exports as unknown as { default: Fetcher }).default;
const ORIGIN = "https://router.test";
const miners = new MinerSet();
afterEach(() => miners.closeAll());

async function call(method: string, path: string, key: string | null, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (key !== null) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return router.fetch(`${ORIGIN}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

const adminCall = (method: string, path: string, body?: unknown) => call(method, `/admin${path}`, env.ADMIN_SECRET, body);

/** A managed key for `owner` (default `dev`, the unit pool's static key's owner), made through the admin API. */
async function newKey(settings: Record<string, unknown> = {}, owner = "dev"): Promise<{ key: string; id: string; [k: string]: any }> {
  const res = await adminCall("POST", "/keys", { owner, ...settings });
  expect(res.status, await res.clone().text()).toBe(201);
  return json(res);
}

/** A session served by one test miner that reports `usage` for every task. */
async function servedSession(usage = { prompt_tokens: 4, completion_tokens: 6 }) {
  const model = uniq("model");
  const miner = await miners.start({ models: [model], usage: () => usage });
  const sid = await createSession({ model });
  await miner.join(sid);
  return { model, sid, miner };
}

describe("key material", () => {
  it("is `ek_<id>_<secret>`, stored only as the SHA-256 of its secret, shown once", async () => {
    const made = await newKey({ name: "ci" });
    const parsed = parseManagedKey(made.key)!;
    expect(parsed.id).toBe(made.id);
    expect(made.prefix).toBe(made.key.slice(0, made.prefix.length));
    const stored = await keyRegistry(env).get(made.id);
    expect(stored!.hash).toBe(await sha256Hex(parsed.secret));
    expect(JSON.stringify(stored)).not.toContain(parsed.secret);
    // Listing and reading never show the material again.
    for (const res of [await adminCall("GET", "/keys?owner=dev"), await adminCall("GET", `/keys/${made.id}`)]) {
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(text).toContain(made.id);
      expect(text).not.toContain(parsed.secret);
      expect(text).not.toContain(stored!.hash);
    }
    // Two mints never collide.
    const [a, b] = await Promise.all([mintSecret("0123456789abcdef"), mintSecret("0123456789abcdef")]);
    expect(a.token).not.toBe(b.token);
  });

  it("authenticates; a wrong secret for a real id, a malformed key and an unknown id are 401", async () => {
    const { key, id } = await newKey();
    expect((await call("GET", "/api/v1/keys", key)).status).toBe(200);
    const wrong = `ek_${id}_${"A".repeat(43)}`;
    const unknown = `ek_${"0".repeat(16)}_${key.slice(-43)}`;
    for (const bad of [wrong, unknown, `${key}x`, key.slice(0, -1)]) {
      const res = await call("GET", "/api/v1/keys", bad);
      expect(res.status, bad).toBe(401);
    }
  });
});

describe("rotate, revoke, expiry", () => {
  it("rotation keeps the id and settings; the old secret fails at once, the new one works", async () => {
    const made = await newKey({ rate_limit: 1000, allowed_models: ["m-1"] });
    const res = await adminCall("POST", `/keys/${made.id}/rotate`);
    expect(res.status).toBe(200);
    const rotated = await json(res);
    expect(rotated.id).toBe(made.id);
    expect(rotated.key).not.toBe(made.key);
    expect(rotated).toMatchObject({ rate_limit: 1000, allowed_models: ["m-1"], owner: "dev" });
    expect((await call("GET", "/api/v1/keys", made.key)).status).toBe(401);
    expect((await call("GET", "/api/v1/keys", rotated.key)).status).toBe(200);
  });

  it("a revoked key is refused at once, and a revoked key cannot be rotated back to life", async () => {
    const { key, id } = await newKey();
    expect((await call("GET", "/api/v1/keys", key)).status).toBe(200); // cached in this isolate now
    expect((await adminCall("POST", `/keys/${id}/revoke`)).status).toBe(200);
    const res = await call("GET", "/api/v1/keys", key);
    expect(res.status).toBe(401);
    expect((await json(res)).error.message).toMatch(/revoked/);
    expect((await adminCall("POST", `/keys/${id}/rotate`)).status).toBe(404);
  });

  it("an expired key is refused; an expiry in the past is refused at creation", async () => {
    const { key } = await newKey({ expires_at: new Date(Date.now() + 1500).toISOString() });
    expect((await call("GET", "/api/v1/keys", key)).status).toBe(200);
    await sleep(1600);
    const res = await call("GET", "/api/v1/keys", key);
    expect(res.status).toBe(401);
    expect((await json(res)).error.message).toMatch(/expired/);
    expect((await adminCall("POST", "/keys", { owner: "dev", expires_at: Math.floor(Date.now() / 1000) - 10 })).status).toBe(400);
  });
});

describe("admin API", () => {
  it("refuses a missing or wrong admin secret (401), an API key included", async () => {
    const { key } = await newKey();
    for (const bearer of [null, "dev-key", key, `${env.ADMIN_SECRET}x`, env.ADMIN_SECRET.slice(0, -1)]) {
      const res = await call("GET", "/admin/keys", bearer);
      expect(res.status, String(bearer)).toBe(401);
    }
  });

  it("refuses to run at all without a fit ADMIN_SECRET, whatever the bearer", async () => {
    const { default: app } = await import("../../workers/index.ts");
    for (const ADMIN_SECRET of ["", "short"]) {
      const res = await app.fetch(
        new Request(`${ORIGIN}/admin/keys`, { headers: { Authorization: `Bearer ${ADMIN_SECRET}` } }),
        { ...env, ADMIN_SECRET },
        { waitUntil() {}, passThroughOnException() {}, props: {} } as unknown as ExecutionContext,
      );
      expect(res.status).toBe(503);
      expect((await json(res)).error.details.variables).toContain("ADMIN_SECRET");
    }
  });

  it("validates what it stores: owner names, budgets, limits", async () => {
    for (const body of [
      { owner: "*" },
      { owner: "a b" },
      // The router runs its keyless routes as these owners: a key acting as one would see their sessions.
      { owner: "trial" },
      { owner: "x402" },
      { owner: "x", token_budget: -1 },
      { owner: "x", rate_limit: 0 },
      { owner: "x", extra: 1 },
    ]) {
      expect((await adminCall("POST", "/keys", body)).status, JSON.stringify(body)).toBe(400);
    }
  });
});

describe("allowed models", () => {
  it("a restricted key must name an allowed model on REST work routes (403 model_not_allowed otherwise)", async () => {
    const { model, sid } = await servedSession();
    const { key } = await newKey({ allowed_models: [model] });
    const other = await call("POST", `/api/v1/completions/${sid}`, key, { prompt: "hello there", max_tokens: 8, model: "edge/other" });
    expect(other.status).toBe(403);
    expect((await json(other)).error).toMatchObject({ code: "model_not_allowed", details: { allowed_models: [model] } });
    const unnamed = await call("POST", `/api/v1/completions/${sid}`, key, { prompt: "hello there", max_tokens: 8 });
    expect(unnamed.status).toBe(403);
    const ok = await call("POST", `/api/v1/completions/${sid}`, key, { prompt: "hello there", max_tokens: 8, model });
    expect(ok.status, await ok.clone().text()).toBe(200);
  });
});

describe("per-key rate limit", () => {
  it("answers 429 rate_limited with retry-after past the key's requests per minute; other keys are unaffected", async () => {
    const limited = await newKey({ rate_limit: 3 });
    const free = await newKey();
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await call("GET", "/api/v1/keys", limited.key)).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    const res = await call("GET", "/api/v1/keys", limited.key);
    expect((await json(res)).error.code).toBe("rate_limited");
    const retry = Number(res.headers.get("retry-after"));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
    expect((await call("GET", "/api/v1/keys", free.key)).status).toBe(200);
  });
});

describe("token budget", () => {
  it("charges each answer's usage; once used up, 402 budget_exhausted and nothing is submitted", async () => {
    const { model, sid, miner } = await servedSession({ prompt_tokens: 4, completion_tokens: 6 });
    const { key, id } = await newKey({ token_budget: 20 });
    for (let i = 0; i < 2; i++) {
      const res = await call("POST", `/api/v1/completions/${sid}`, key, { prompt: `hello ${i}`, max_tokens: 8, model });
      expect(res.status, await res.clone().text()).toBe(200);
    }
    await waitFor(async () => (await keyRegistry(env).get(id))!.tokens_used === 20, "the budget to be charged", 5000);
    const assigned = miner.assignsFor(sid).length;
    const res = await call("POST", `/api/v1/completions/${sid}`, key, { prompt: "one more", max_tokens: 8, model });
    expect(res.status).toBe(402);
    expect((await json(res)).error).toMatchObject({ code: "budget_exhausted", details: { token_budget: 20, tokens_used: 20 } });
    await sleep(200);
    expect(miner.assignsFor(sid).length).toBe(assigned);
    // Reads still work under an exhausted budget.
    expect((await call("GET", "/api/v1/usage", key)).status).toBe(200);
  });

  it("the admin raises a used-up budget or lifts a limit without a new secret", async () => {
    const { model, sid } = await servedSession({ prompt_tokens: 4, completion_tokens: 6 });
    const { key, id } = await newKey({ token_budget: 10, rate_limit: 1000 });
    const ask = () => call("POST", `/api/v1/completions/${sid}`, key, { prompt: "hello again", max_tokens: 8, model });
    expect((await ask()).status).toBe(200);
    await waitFor(async () => (await keyRegistry(env).get(id))!.tokens_used === 10, "the charge", 5000);
    expect((await ask()).status).toBe(402);
    const raised = await adminCall("PATCH", `/keys/${id}`, { token_budget: 30, rate_limit: null });
    expect(raised.status).toBe(200);
    expect(await json(raised)).toMatchObject({ token_budget: 30, rate_limit: null, tokens_used: 10 });
    expect((await ask()).status).toBe(200);
    expect((await adminCall("PATCH", `/keys/${"0".repeat(16)}`, { token_budget: 1 })).status).toBe(404);
    expect((await adminCall("PATCH", `/keys/${id}`, { owner: "someone-else" })).status).toBe(400);
    // Self-service has no such route: a key cannot raise its own budget.
    expect((await call("PATCH", `/api/v1/keys/${id}`, key, { token_budget: 1e9 })).status).toBe(404);
  });

  it("concurrent requests reserve before they run: overspend stays within one request's reservation", async () => {
    const { model, sid } = await servedSession({ prompt_tokens: 2, completion_tokens: 8 });
    // Each request reserves its body bytes + max_tokens (~60 + 8) and is charged 10. Without reservations all 12
    // would be admitted (nothing used yet) and charged 120, far past budget + one reservation.
    const { key, id } = await newKey({ token_budget: 15 });
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => call("POST", `/api/v1/completions/${sid}`, key, { prompt: `p${i}`, max_tokens: 8, model })),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 402).length, statuses.join(",")).toBeGreaterThan(0);
    const ok = statuses.filter((s) => s === 200).length;
    await waitFor(async () => (await keyRegistry(env).get(id))!.tokens_used === ok * 10, "charges", 5000);
    const reservation = new TextEncoder().encode(JSON.stringify({ prompt: "p0", max_tokens: 8, model })).length + 8;
    expect(ok).toBeGreaterThan(0);
    expect(ok * 10).toBeLessThanOrEqual(15 + reservation);
  });
});

describe("self-service", () => {
  it("a key creates keys carved out of its own budget and rate, never more, and manages only itself and its children", async () => {
    const parent = await newKey({ token_budget: 1000, rate_limit: 100, allowed_models: ["m-a", "m-b"] });
    const tooMuch = await call("POST", "/api/v1/keys", parent.key, { token_budget: 1001, rate_limit: 10, allowed_models: ["m-a"] });
    expect(tooMuch.status).toBe(403);
    const wider = await call("POST", "/api/v1/keys", parent.key, { token_budget: 10, rate_limit: 10, allowed_models: ["m-c"] });
    expect(wider.status).toBe(403);
    const unbounded = await call("POST", "/api/v1/keys", parent.key, {});
    expect(unbounded.status).toBe(403);
    const res = await call("POST", "/api/v1/keys", parent.key, { token_budget: 400, rate_limit: 30, allowed_models: ["m-a"] });
    expect(res.status, await res.clone().text()).toBe(201);
    const child = await json(res);
    expect(child).toMatchObject({ owner: "dev", token_budget: 400, rate_limit: 30, created_by: parent.id });
    // Moved, not copied: the parent now has what is left.
    const p = await keyRegistry(env).get(parent.id);
    expect(p).toMatchObject({ token_budget: 600, rate_limit: 70 });
    // The child cannot rotate or revoke its parent (404: not its own); the parent revokes the child.
    expect((await call("POST", `/api/v1/keys/${parent.id}/rotate`, child.key)).status).toBe(404);
    expect((await call("POST", `/api/v1/keys/${parent.id}/revoke`, child.key)).status).toBe(404);
    expect((await call("POST", `/api/v1/keys/${child.id}/revoke`, parent.key)).status).toBe(200);
    expect((await call("GET", "/api/v1/keys", child.key)).status).toBe(401);
  });

  it("another owner's key id is 404 for listing, reading, rotating and revoking", async () => {
    const a = await newKey({}, uniq("tenant-a"));
    const b = await newKey({}, uniq("tenant-b"));
    const listed = await json(await call("GET", "/api/v1/keys", b.key));
    expect(listed.data.map((k: { id: string }) => k.id)).not.toContain(a.id);
    for (const [method, path] of [
      ["GET", `/api/v1/keys/${a.id}`],
      ["POST", `/api/v1/keys/${a.id}/rotate`],
      ["POST", `/api/v1/keys/${a.id}/revoke`],
    ] as const) {
      expect((await call(method, path, b.key)).status, path).toBe(404);
    }
    expect((await call("GET", "/api/v1/keys", a.key)).status).toBe(200);
  });
});

describe("usage", () => {
  it("rows per key and model sum the answers' usage; requests, failures and latency are counted", async () => {
    const { model, sid } = await servedSession({ prompt_tokens: 3, completion_tokens: 5 });
    const owner = uniq("meter");
    const { key, id } = await newKey({}, owner);
    // `sid` is dev's: to this owner it does not exist (404, a failure); the work goes to a session of its own.
    const session_id = uniq("s");
    const own = await call("POST", "/api/v1/sessions", key, { session_id, model, deposit: 1000 });
    expect(own.status, await own.clone().text()).toBe(201);
    const m = miners.all[0];
    await m.join(session_id);
    for (let i = 0; i < 3; i++) {
      expect((await call("POST", `/api/v1/completions/${session_id}`, key, { prompt: `hello world ${i}`, max_tokens: 8 })).status).toBe(
        200,
      );
    }
    expect((await call("POST", `/api/v1/completions/${sid}`, key, { prompt: "not mine", max_tokens: 8 })).status).toBe(404);
    const report = await waitFor(
      async () => {
        const r = await json(await call("GET", "/api/v1/usage?bucket=minute", key));
        return r.totals.requests === 4 ? r : null;
      },
      "usage to be recorded",
      5000,
    );
    expect(report.owner).toBe(owner);
    expect(report.totals).toMatchObject({ prompt_tokens: 9, completion_tokens: 15, failures: 1 });
    const row = report.data.find((r: { model: string }) => r.model === model);
    expect(row).toMatchObject({ key_id: id, requests: 3, prompt_tokens: 9, completion_tokens: 15, failures: 0 });
    expect(row.latency_ms_max).toBeGreaterThanOrEqual(row.latency_ms_avg);
    // Day rows carry the same sums; another owner's meter has none of it.
    const day = await json(await call("GET", "/api/v1/usage?bucket=day", key));
    expect(day.totals).toMatchObject({ requests: 4, prompt_tokens: 9, completion_tokens: 15 });
    const q = { bucket: "day" as const, from: 0, to: Date.now() + 1 };
    expect((await usageMeter(env, uniq("nobody")).query(q)).length).toBe(0);
    // The admin sees it under the owner.
    const all = await json(await adminCall("GET", `/usage?owner=${owner}&bucket=day`));
    expect(all.totals).toMatchObject({ requests: 4, prompt_tokens: 9, completion_tokens: 15 });
  });

  it("one JSON log line per request, with the route pattern and no secret", async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((...args) => void lines.push(args.join(" ")));
    const { key, id } = await newKey();
    try {
      const res = await call("GET", `/api/v1/keys/${id}`, key);
      expect(res.status).toBe(200);
      await waitFor(async () => lines.some((l) => l.includes(res.headers.get("x-request-id")!)), "the log line", 2000);
    } finally {
      spy.mockRestore();
    }
    const line = JSON.parse(lines.find((l) => l.includes(`"key_id":"${id}"`))!);
    expect(line).toMatchObject({ msg: "request", key_id: id, owner: "dev", method: "GET", route: "/api/v1/keys/:id", status: 200 });
    expect(line.latency_ms).toBeGreaterThanOrEqual(0);
    expect(lines.join("\n")).not.toContain(key);
  });
});
