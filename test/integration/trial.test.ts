import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter } from "../helpers/network.ts";

// Trial routes (workers/routes/trial.ts) through the real router (wrangler dev) and one real miner: no API key,
// TRIAL_QUOTA "2/60" per client IP (CF-Connecting-IP only), the REST routes' answers, the quota kept across a
// router restart on the same state, and the routes off (404) with TRIAL_QUOTA 0.

const VARS = { TRIAL_QUOTA: "2/60", TRIAL_MAX_TOKENS: "8" };
let router: Router;
let miner: Miner;

const trial = (path: string, ip: string, body: unknown, headers: Record<string, string> = {}) =>
  api(router, path, { key: null, body, headers: { "CF-Connecting-IP": ip, ...headers } });
const keys = (o: object) => Object.keys(o).sort();

beforeAll(async () => {
  router = await startRouter({ vars: VARS });
  miner = await startMiner(router.url, { name: "trial" });
  await miner.waitFor("ready", undefined, 180_000);
}, 240_000);

afterAll(async () => {
  await miner?.stop();
  await router?.stop();
});

describe("trial routes", () => {
  it("a completion without a key answers the REST completion's text; the third request of an IP is 429", async () => {
    const ip = "198.51.100.7";
    const body = { prompt: "The capital of France is", temperature: 0, max_tokens: 8 };
    const t = await trial("/api/v1/trial/completions", ip, body);
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    const rest = await api(router, "/api/v1/completions", { body });
    expect(rest.status).toBe(200);
    expect(t.body.choices[0].text).toBe(rest.body.choices[0].text);
    expect(keys(t.body)).toEqual(keys(rest.body));
    expect(t.body.receipt).toBeTruthy();
    // Trial work is the trial owner's: a task read needs a key, and a key of another owner is refused.
    const taskPath = `/api/v1/tasks/${t.body.session_id ?? "trial"}/${t.body.task_id ?? t.body.id}`;
    expect((await api(router, taskPath, { key: null, headers: { "CF-Connecting-IP": ip } })).status).toBe(401);
    expect([403, 404]).toContain((await api(router, taskPath)).status);

    const second = await trial("/api/v1/trial/completions/trial", ip, body);
    expect(second.status).toBe(200);
    // Spoofed forwarding headers change nothing: only CF-Connecting-IP counts.
    const spoof = { "X-Forwarded-For": "203.0.113.99", "X-Real-IP": "203.0.113.99", "True-Client-IP": "203.0.113.99" };
    const third = await trial("/api/v1/trial/completions", ip, body, spoof);
    expect(third.status).toBe(429);
    expect(third.body.error.code).toBe("trial_quota_exceeded");
    const retry = Number(third.headers.get("retry-after"));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
    // Another IP is served.
    expect((await trial("/api/v1/trial/completions", "198.51.100.8", body)).status).toBe(200);
  }, 120_000);

  it("a big max_tokens or another session is refused (400) without using the quota", async () => {
    const ip = "198.51.100.20";
    const big = await trial("/api/v1/trial/completions", ip, { prompt: "x", max_tokens: 9 });
    expect(big.status).toBe(400);
    expect(big.body.error.details[0].path).toBe("max_tokens");
    expect((await trial("/api/v1/trial/completions", ip, { prompt: "x", session_id: "default" })).status).toBe(400);
    expect((await trial("/api/v1/trial/completions", ip, { prompt: "x", max_tokens: 2 })).status).toBe(200);
    // Streaming works as on REST, and the two refusals above cost nothing: this is the second request.
    const streamed = await trial("/api/v1/trial/completions", ip, { prompt: "x", max_tokens: 2, stream: true });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get("content-type")).toContain("text/event-stream");
    expect(String(streamed.body)).toContain("[DONE]");
    expect((await trial("/api/v1/trial/completions", ip, { prompt: "x", max_tokens: 2 })).status).toBe(429);
  }, 120_000);

  it("delegate, validate and factcheck trial routes answer like their REST routes", async () => {
    const cases: [string, string, unknown][] = [
      ["/api/v1/trial/delegate", "/api/v1/delegate", { task_request_input: "Say hi", max_tokens: 4 }],
      ["/api/v2/trial/delegate", "/api/v2/delegate", { objective: "Say hi", execution: { max_tokens: 4 } }],
      ["/api/v1/trial/validate", "/api/v1/validate", { task_request_input: "2+2", task_result_output: "4" }],
      ["/api/v2/trial/validate", "/api/v2/validate", { claim: "2+2 is 4" }],
      ["/api/v1/trial/factcheck", "/api/v1/factcheck", { claim: "Water boils at 100 C at sea level." }],
      ["/api/v1/trial/fact-check", "/api/v1/fact-check", { claim: "Water boils at 100 C at sea level." }],
    ];
    let n = 30;
    for (const [path, restPath, body] of cases) {
      const t = await trial(path, `198.51.100.${n++}`, body);
      expect(t.status, `${path} ${JSON.stringify(t.body)}`).toBe(200);
      const rest = await api(router, restPath, { body: { ...(body as object), session_id: "trial" } });
      expect(rest.status, `${restPath} ${JSON.stringify(rest.body)}`).toBe(200);
      expect(keys(t.body), path).toEqual(keys(rest.body));
    }
  }, 300_000);

  it("the quota survives a router restart on the same state; TRIAL_QUOTA 0 turns the routes off", async () => {
    const ip = "198.51.100.7"; // used up in the first test
    const { port, persistDir } = router;
    await router.stop("SIGKILL");
    router = await startRouter({ port, persistDir, vars: VARS });
    const again = await trial("/api/v1/trial/completions", ip, { prompt: "x" });
    expect(again.status).toBe(429);
    expect(again.body.error.code).toBe("trial_quota_exceeded");
    await router.stop("SIGKILL");
    router = await startRouter({ port, persistDir, vars: { ...VARS, TRIAL_QUOTA: "0" } });
    const off = await trial("/api/v1/trial/completions", "198.51.100.99", { prompt: "x" });
    expect(off.status).toBe(404);
    expect(off.body.error.code).toBe("not_found");
  }, 240_000);
});
