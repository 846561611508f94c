import { createExecutionContext, evictDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { trialQuota } from "../../durable-objects/stubs.ts";
import app from "../../workers/index.ts";
import { trialConfig } from "../../workers/lib/trial.ts";
import { ipBucket } from "../../workers/middleware/rate-limit.ts";
import { API_KEY, env, ORIGIN, uniq } from "./helpers.ts";

// Trial quotas (durable-objects/trial-quota.ts) and the trial routes' edge (workers/routes/trial.ts): the
// sliding window and its Retry-After, one object per client IP bucket, and what the routes refuse before work.

const W = 60_000;

describe("TrialQuota: the sliding window", () => {
  it("takes `limit` requests per window, then says when the oldest leaves it", async () => {
    const q = trialQuota(env, uniq("ip"));
    const t0 = 1_000_000;
    expect(await q.take(2, W, t0)).toMatchObject({ ok: true, remaining: 1 });
    expect(await q.take(2, W, t0 + 10_000)).toMatchObject({ ok: true, remaining: 0 });
    expect(await q.take(2, W, t0 + 20_000)).toEqual({ ok: false, retry_after_s: 40 });
    // A refused request is not recorded: the oldest still leaves at t0 + 60 s.
    expect(await q.take(2, W, t0 + 59_500)).toEqual({ ok: false, retry_after_s: 1 });
    // Sliding, not fixed: at t0 + 60 s only the first left, so one fits and the next waits for the second.
    expect(await q.take(2, W, t0 + W)).toMatchObject({ ok: true, remaining: 0 });
    expect(await q.take(2, W, t0 + W + 1_000)).toEqual({ ok: false, retry_after_s: 9 });
    expect(await q.inWindow(W, t0 + W + 1_000)).toEqual([t0 + 10_000, t0 + W]);
  });

  it("a refund gives back one request", async () => {
    const q = trialQuota(env, uniq("ip"));
    const taken = await q.take(1, W, 5_000);
    expect(taken.ok).toBe(true);
    expect((await q.take(1, W, 6_000)).ok).toBe(false);
    await q.refund(5_000);
    expect((await q.take(1, W, 7_000)).ok).toBe(true);
  });

  it("is one object per IP bucket: another IP has its own quota, an IPv6 /64 shares one", async () => {
    const a = uniq("198.51.100.");
    expect((await trialQuota(env, a).take(1, W, 1)).ok).toBe(true);
    expect((await trialQuota(env, a).take(1, W, 2)).ok).toBe(false);
    expect((await trialQuota(env, uniq("203.0.113.")).take(1, W, 3)).ok).toBe(true);
    expect(ipBucket("2001:db8:1:2::1")).toBe(ipBucket("2001:db8:1:2:ffff::9"));
    expect(ipBucket("2001:db8:1:2::1")).not.toBe(ipBucket("2001:db8:1:3::1"));
  });

  it("survives eviction: the window is in SQLite", async () => {
    const name = uniq("ip");
    expect((await trialQuota(env, name).take(1, W, 100)).ok).toBe(true);
    await evictDurableObject(trialQuota(env, name));
    expect(await trialQuota(env, name).take(1, W, 200)).toEqual({ ok: false, retry_after_s: 60 });
  });
});

describe("trialConfig", () => {
  const cfg = (TRIAL_QUOTA: string) => trialConfig({ ...env, TRIAL_QUOTA });
  it("reads requests/seconds; 0 and empty turn the routes off; garbage is a configuration error", () => {
    expect(cfg("2/60")).toMatchObject({ limit: 2, windowMs: 60_000 });
    expect(cfg("0")).toBeNull();
    expect(cfg("")).toBeNull();
    expect(cfg("0/60")).toBeNull();
    expect(() => cfg("lots")).toThrow(/TRIAL_QUOTA/);
  });
});

async function post(path: string, body: unknown, ip: string, vars: Partial<Env> = {}, headers: Record<string, string> = {}) {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", "cf-connecting-ip": ip, ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }),
    { ...env, TRIAL_QUOTA: "2/60", ...vars },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}
const window = async (ip: string) => trialQuota(env, ipBucket(ip)).inWindow(W);

describe("trial routes: refused before work, without using the quota", () => {
  it("TRIAL_QUOTA 0 or empty: 404", async () => {
    for (const TRIAL_QUOTA of ["0", ""]) {
      const res = await post("/api/v1/trial/completions", { prompt: "hi" }, uniq("10.0.0."), { TRIAL_QUOTA });
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
    }
  });

  it("another session id (body or path), a max_tokens above the cap, an invalid body: 400 naming the field, quota untouched", async () => {
    const ip = uniq("10.1.0.");
    const cases: [string, unknown, string][] = [
      ["/api/v1/trial/completions", { prompt: "hi", session_id: "default" }, "session_id"],
      ["/api/v1/trial/completions/default", { prompt: "hi" }, "sessionId"],
      ["/api/v1/trial/completions", { prompt: "hi", max_tokens: 65 }, "max_tokens"],
      ["/api/v1/trial/delegate", { task_request_input: "x", max_tokens: 4096 }, "max_tokens"],
      ["/api/v2/trial/delegate", { objective: "x", execution: { max_tokens: 100 } }, "execution.max_tokens"],
      ["/api/v1/trial/completions", { prompt: 7 }, "prompt"],
      ["/api/v1/trial/validate", {}, "task_request_input"],
    ];
    for (const [path, body, field] of cases) {
      const res = await post(path, body, ip);
      expect(res.status, path).toBe(400);
      const err = ((await res.json()) as { error: { code: string; details: { path: string }[] } }).error;
      expect(err.code).toBe("invalid_request");
      expect(err.details.map((d) => d.path)).toContain(field);
    }
    expect(await window(ip)).toEqual([]);
  });

  it("v3 has no trial route, and without a key the REST routes and task reads stay closed", async () => {
    const ip = uniq("10.2.0.");
    expect((await post("/api/v3/trial/delegate", { objective: "x" }, ip)).status).toBe(401);
    expect((await post("/api/v1/completions", { prompt: "hi" }, ip)).status).toBe(401);
    const tasks = await app.fetch(new Request(`${ORIGIN}/api/v1/tasks/trial/1`, { headers: { "cf-connecting-ip": ip } }), env);
    expect(tasks.status).toBe(401);
  });

  it("a huge body: 413, quota untouched", async () => {
    const ip = uniq("10.3.0.");
    const res = await post("/api/v1/trial/completions", { prompt: "x".repeat(1024 * 1024 + 1) }, ip);
    expect(res.status).toBe(413);
    expect(await window(ip)).toEqual([]);
  });

  it("over quota: 429 trial_quota_exceeded with Retry-After; spoofed forwarding headers do not reset it", async () => {
    const ip = uniq("10.4.0.");
    // Taken directly, as two served requests would have.
    const now = Date.now();
    await trialQuota(env, ipBucket(ip)).take(2, W, now - 30_000);
    await trialQuota(env, ipBucket(ip)).take(2, W, now - 20_000);
    const spoof = { "x-forwarded-for": "192.0.2.1", "x-real-ip": "192.0.2.1", "true-client-ip": "192.0.2.1" };
    const res = await post("/api/v1/trial/completions", { prompt: "hi" }, ip, {}, spoof);
    expect(res.status).toBe(429);
    const retry = Number(res.headers.get("retry-after"));
    expect(retry).toBeGreaterThanOrEqual(29);
    expect(retry).toBeLessThanOrEqual(31);
    const err = ((await res.json()) as { error: { code: string; details: { retry_after_s: number } } }).error;
    expect(err).toMatchObject({ code: "trial_quota_exceeded", details: { retry_after_s: retry } });
  });
});

describe("the trial session id", () => {
  it("is reserved: no API key may create it first", async () => {
    const res = await app.fetch(
      new Request(`${ORIGIN}/api/v1/sessions`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ session_id: "trial", deposit: 0 }),
      }),
      env,
    );
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { details: { var: string } } }).error.details.var).toBe("TRIAL_SESSION_ID");
  });
});
