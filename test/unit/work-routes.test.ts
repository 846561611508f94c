import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { resultHash } from "../../shared/signing.ts";
import app from "../../workers/index.ts";
import { RUBRIC_CONSTRAINT, VALIDATE_VERDICTS } from "../../workers/lib/rubric.ts";
import { API_KEY, createSession, env, errorOf, json, MinerSet, ORIGIN, type TestMiner, uniq } from "./helpers.ts";

// Delegate, validate and factcheck through the real router and Durable Objects, with scripted test miners:
// each failure mode's error code, and each aggregation strategy and disagreement policy over replicas that
// really disagree. (The real engine and real miner processes are in test/integration/work.test.ts.)

const miners = new MinerSet();
afterEach(() => miners.closeAll());

/** Configured pools off by default, so each test says what it configures. */
const NO_CONFIG: Partial<Env> = {
  DEFAULT_SESSION_ID: "",
  DELEGATE_SESSION_POOL: "",
  VALIDATE_SESSION_POOL: "",
  FACTCHECK_STANDARD_SESSION: "",
  FACTCHECK_REALTIME_SESSION: "",
  FACTCHECK_RETRIEVER_URL: "",
};

function call(path: string, body: unknown, vars: Partial<Env> = {}): Promise<Response> {
  return callAt(`/api${path}`, body, vars);
}

async function callAt(path: string, body: unknown, vars: Partial<Env> = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
    { ...env, ...NO_CONFIG, ...vars },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

const verdictText = (verdict: string, score: number, confidence = 8) => `VERDICT: ${verdict}\nSCORE: ${score}\nCONFIDENCE: ${confidence}`;

/** A test miner with its own dedicated redundancy-1 session, answering rubric prompts with `answer`. */
async function pinned(model: string, answer: string, stake = 1000): Promise<{ miner: TestMiner; sid: string }> {
  const miner = await miners.start({ models: [model], stake, text: (a) => (a.params.constraint ? answer : `delegated: ${answer}`) });
  const sid = await createSession({ model, mode: "dedicated", dedicated_miners: [miner.address], redundancy: 1, max_miners: 1 });
  await miner.join(sid);
  return { miner, sid };
}

describe("failure modes without sessions", () => {
  it("no session id and no configured default → 400 session_required, for every single-session route", async () => {
    for (const [path, body] of [
      ["/v1/delegate", { task_request_input: "sum 2 and 2" }],
      ["/v2/delegate", { objective: "sum", input: { a: 2, b: 2 } }],
      ["/v1/validate", { task_request_input: "sum 2 and 2", task_result_output: "4" }],
      ["/v2/validate", { claim: "2 + 2 = 4" }],
      ["/v1/factcheck", { claim: "water is wet" }],
      ["/v1/fact-check", { claim: "water is wet", mode: "realtime", documents: ["water is wet"] }],
    ] as const) {
      const res = await call(path, body);
      expect(res.status, path).toBe(400);
      const err = await errorOf(res);
      expect(err.error.code, path).toBe("session_required");
      expect(err.error.message).toMatch(/session/);
    }
  });

  it("v3 with no session pool in the request or configuration → 503 configuration_error", async () => {
    for (const [path, body, v] of [
      ["/v3/delegate", { objective: "sum 2 and 2" }, "DELEGATE_SESSION_POOL"],
      ["/v3/validate", { claim: "2 + 2 = 4", consensus: { replicas: 3 } }, "VALIDATE_SESSION_POOL"],
    ] as const) {
      const res = await call(path, body);
      expect(res.status, path).toBe(503);
      const err = await errorOf(res);
      expect(err.error.code).toBe("configuration_error");
      expect(err.error.details).toMatchObject({ var: v });
    }
    // A malformed configured pool is a configuration error too.
    const bad = await call("/v3/delegate", { objective: "x" }, { DELEGATE_SESSION_POOL: "ok-1,not valid!" });
    expect((await errorOf(bad)).error.code).toBe("configuration_error");
  });

  it("realtime factcheck without documents or a retriever → configuration_error; bad bodies → invalid_request", async () => {
    const res = await call("/v1/factcheck", { claim: "the sky is green", mode: "realtime" }, { FACTCHECK_REALTIME_SESSION: uniq("fc") });
    expect(res.status).toBe(503);
    expect((await errorOf(res)).error).toMatchObject({ code: "configuration_error", details: { var: "FACTCHECK_RETRIEVER_URL" } });
    for (const [path, body] of [
      ["/v3/delegate", { objective: "x", consensus: { replicas: 2 } }],
      ["/v3/validate", { claim: "x", consensus: { strategy: "ensemble_model" } }],
      ["/v1/validate", { task_request_input: "x" }],
      ["/v1/factcheck", { claim: "x", mode: "fast" }],
    ] as const) {
      const r = await call(path, body);
      expect(r.status, path).toBe(400);
      expect((await errorOf(r)).error.code).toBe("invalid_request");
    }
  });

  it("needs an API key", async () => {
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${ORIGIN}/api/v3/validate`, { method: "POST", body: "{}" }), env, ctx);
    expect(res.status).toBe(401);
  });
});

describe("validate v3 across a pool whose replicas disagree", () => {
  it("majority, fail_hard, return_all, weighted and median_of_means over real verdicts", async () => {
    const model = uniq("model");
    const a = await pinned(model, verdictText("VALID", 8, 9), 100);
    const b = await pinned(model, verdictText("VALID", 6, 7), 100);
    const c = await pinned(model, verdictText("INVALID", 1, 10), 5000);
    const pool = [a.sid, b.sid, c.sid];

    // majority (the default): two VALID beat one INVALID; the outlier is named; evidence per replica.
    const res = await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { replicas: 3, session_pool: pool } });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.request_id).toBe(res.headers.get("X-Request-ID"));
    expect(body).toMatchObject({ status: "ok", version: "v3", verdict: "VALID", score: 0.7 });
    expect(body.confidence).toBeCloseTo(0.8 * (2 / 3), 3);
    expect(body.consensus).toMatchObject({
      strategy: "majority",
      disagreement_policy: "best_effort",
      status: "majority",
      agreed: [0, 1],
      disagreed: [2],
      session_pool: pool,
    });
    expect(body.replicas).toHaveLength(3);
    for (const [i, r] of body.replicas.entries()) {
      expect(r).toMatchObject({ index: i, session_id: pool[i], status: "ok", agreed: i < 2 });
      expect(r.task_id).toMatch(/^\d+$/);
      expect(r.miners).toEqual([[a, b, c][i].miner.address]);
      expect(r.hash).toBe(resultHash(r.output));
      expect(typeof r.latency_ms).toBe("number");
    }
    expect(body.replicas[2]).toMatchObject({ verdict: "INVALID", score: 0.1, confidence: 1 });
    // Miners were asked under the rubric grammar (constrained decoding), greedily.
    const [assign] = a.miner.assignsFor(a.sid);
    expect(assign.params.constraint).toEqual(RUBRIC_CONSTRAINT(VALIDATE_VERDICTS));
    expect(assign.params.temperature).toBe(0);
    expect(assign.input.prompt).toContain("Claim: 2 + 2 = 4");

    // fail_hard: one disagreeing replica fails the request, with every replica's evidence.
    const hard = await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { session_pool: pool, disagreement_policy: "fail_hard" } });
    expect(hard.status).toBe(409);
    const hardBody = await errorOf(hard);
    expect(hardBody).toMatchObject({ status: "failed", error: { code: "no_consensus" } });
    expect((hardBody as any).replicas).toHaveLength(3);

    // weighted by stake: the heavily staked INVALID miner outweighs two light VALID ones.
    const w = await json(
      await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { session_pool: pool, strategy: "weighted", weight_by: "stake" } }),
    );
    expect(w).toMatchObject({
      status: "ok",
      verdict: "INVALID",
      consensus: { strategy: "weighted", weight_by: "stake", agreed: [2], disagreed: [0, 1] },
    });
    expect(w.replicas.map((r: { weight: number }) => r.weight)).toEqual([100, 100, 5000]);
    // weighted by reputation (all newcomers, equal scores): the majority wins again.
    const wr = await json(await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { session_pool: pool, strategy: "weighted" } }));
    expect(wr).toMatchObject({ verdict: "VALID", consensus: { weight_by: "reputation" } });

    // median_of_means: scores 0.8, 0.6, 0.1 → blocks [0.8, 0.1], [0.6] → median of (0.45, 0.6) = 0.525.
    const m = await json(
      await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { session_pool: pool, strategy: "median_of_means", tolerance: 0.1 } }),
    );
    expect(m.score).toBeCloseTo(0.525, 3);
    expect(m).toMatchObject({
      verdict: "VALID",
      consensus: { strategy: "median_of_means", tolerance: 0.1, agreed: [1], status: "no_quorum" },
    });
    const mAll = await call("/v3/validate", {
      claim: "2 + 2 = 4",
      consensus: { session_pool: pool, strategy: "median_of_means", tolerance: 0.1, disagreement_policy: "return_all" },
    });
    expect(mAll.status).toBe(200);
    expect(await json(mAll)).toMatchObject({ status: "no_consensus", verdict: null, consensus: { status: "no_quorum" } });

    // return_all with five replicas over the three sessions (replica i → pool[i mod 3]): VALID 4 replicas, INVALID 1 —
    // but the four VALID replicas are two miners (a and b answered twice each), and a quorum of five is three
    // distinct miners: no quorum, so return_all lists the candidates and answers none.
    const five = await json(
      await call("/v3/validate", { claim: "2 + 2 = 4", consensus: { replicas: 5, session_pool: pool, disagreement_policy: "return_all" } }),
    );
    expect(five.replicas.map((r: { session_id: string }) => r.session_id)).toEqual([pool[0], pool[1], pool[2], pool[0], pool[1]]);
    expect(five).toMatchObject({
      status: "no_consensus",
      verdict: null,
      consensus: { status: "no_quorum", quorum: 3, agreed: [0, 1, 3, 4], disagreed: [2] },
    });
    expect(five.consensus.candidates.map((c: { key: string; support: number }) => [c.key, c.support])).toEqual([
      ["VALID", 2],
      ["INVALID", 1],
    ]);
  });

  it("an answer outside the grammar fails that replica with invalid_output", async () => {
    const model = uniq("model");
    const good = await pinned(model, verdictText("RETRY", 4));
    const junk = await pinned(model, "lorem ipsum, not a verdict");
    const body = await json(await call("/v3/validate", { claim: "x", consensus: { replicas: 3, session_pool: [good.sid, junk.sid] } }));
    expect(body).toMatchObject({ status: "ok", verdict: "RETRY", consensus: { agreed: [0, 2], failed: [1] } });
    expect(body.replicas[1]).toMatchObject({
      status: "failed",
      error: { code: "invalid_output" },
      raw: { text: "lorem ipsum, not a verdict" },
    });
  });
});

describe("delegate, factcheck and the remaining failure modes", () => {
  it("v1 delegate through a configured pool created on first use; v2/v3 delegate aggregate outputs by hash", async () => {
    const model = uniq("model");
    const pool = [uniq("dlg"), uniq("dlg")];
    const miner = await miners.start({ models: [model], text: (a) => `done: ${a.input.prompt.length}` });
    const vars = { DELEGATE_SESSION_POOL: pool.join(","), DEFAULT_MODEL: model };
    const pending = call(
      "/v1/delegate",
      { task_request_input: "write a haiku", task_domain: "poetry", task_type: "generation", max_tokens: 16 },
      vars,
    );
    await miner.join(pool[0]);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body).toMatchObject({ status: "ok", version: "v1", session_id: pool[0], consensus: { strategy: "majority", replicas: 1 } });
    expect(body.output).toMatch(/^done: \d+$/);
    expect(body.replicas[0]).toMatchObject({
      session_id: pool[0],
      miners: [miner.address],
      output: body.output,
      hash: resultHash(body.output),
    });
    const [assign] = miner.assignsFor(pool[0]);
    expect(assign.input.prompt).toContain("Task: write a haiku");
    expect(assign.params).toMatchObject({ max_tokens: 16, temperature: 0 });
    expect(assign.params.constraint).toBeUndefined();

    // v3 across the configured pool: the second session is created on first use as well. One miner serves the
    // whole pool, so its three agreeing replicas are one voice: no quorum (best_effort still answers it).
    const v3 = call("/v3/delegate", { objective: "write a haiku", input: { topic: "edge" }, consensus: { replicas: 3 } }, vars);
    await miner.join(pool[1]);
    const v3Body = await json(await v3);
    expect(v3Body).toMatchObject({
      status: "ok",
      version: "v3",
      consensus: { status: "no_quorum", agreed: [0, 1, 2], session_pool: pool },
    });
    expect(v3Body.replicas.map((r: { session_id: string }) => r.session_id)).toEqual([pool[0], pool[1], pool[0]]);

    // v2 with an explicit session_id and execution options.
    const v2 = await json(
      await call(
        "/v2/delegate",
        { session_id: pool[1], objective: "count", input: "abc", execution: { max_tokens: 8 }, metadata: { job: 7 } },
        vars,
      ),
    );
    expect(v2).toMatchObject({ status: "ok", version: "v2", session_id: pool[1], metadata: { job: 7 } });
  });

  it("all replicas fail → status failed with every replica's payload and error", async () => {
    const nobody = uniq("unserved-model");
    const pool = [await createSession({ model: nobody }), await createSession({ model: nobody })];
    const res = await call("/v3/delegate", { objective: "anything", consensus: { replicas: 3, session_pool: pool } });
    expect(res.status).toBe(502);
    const body = (await errorOf(res)) as any;
    expect(body.status).toBe("failed");
    expect(body.error.code).toBe("all_replicas_failed");
    expect(body.consensus).toMatchObject({ failed: [0, 1, 2], agreed: [], status: "none" });
    expect(body.replicas).toHaveLength(3);
    for (const r of body.replicas) {
      expect(r.status).toBe("failed");
      expect(r.error.code).toBe("no_miner_available");
      expect(r.raw.error.code).toBe("no_miner_available");
      expect(r.payload.input.prompt).toContain("Objective: anything");
      expect(r.payload.params.max_tokens).toBe(128);
    }
  });

  it("a replica that never answers in time → 504 timeout with the request id", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 0.2 });
    await miner.join(sid);
    const res = await call("/v2/validate", { session_id: sid, claim: "x", timeout: 0.8 });
    expect(res.status).toBe(504);
    const body = (await errorOf(res)) as any;
    expect(body.error.code).toBe("timeout");
    expect(body.status).toBe("failed");
    expect(body.request_id).toBe(res.headers.get("X-Request-ID"));
    expect(body.replicas[0]).toMatchObject({ session_id: sid, status: "failed", error: { code: "timeout" } });
  });

  it("factcheck: standard and realtime modes map to their own sessions; realtime carries the documents", async () => {
    const model = uniq("model");
    const std = await pinned(model, verdictText("SUPPORTED", 9));
    const rt = await pinned(model, verdictText("REFUTED", 2));
    const vars = { FACTCHECK_STANDARD_SESSION: std.sid, FACTCHECK_REALTIME_SESSION: rt.sid };
    const s = await json(await call("/v1/factcheck", { claim: "water boils at 100 C at sea level" }, vars));
    expect(s).toMatchObject({ status: "ok", mode: "standard", verdict: "SUPPORTED", score: 0.9, grounding: { source: "none" } });
    expect(s.replicas[0]).toMatchObject({ session_id: std.sid, miners: [std.miner.address] });
    const r = await json(
      await call(
        "/v1/fact-check",
        { claim: "the moon is cheese", mode: "realtime", documents: [{ title: "NASA", content: "The moon is rock." }, "Cheese is dairy."] },
        vars,
      ),
    );
    expect(r).toMatchObject({ status: "ok", mode: "realtime", verdict: "REFUTED", grounding: { source: "request" } });
    expect(r.grounding.documents).toHaveLength(2);
    const [assign] = rt.miner.assignsFor(rt.sid);
    expect(assign.input.prompt).toContain("Source 1 (NASA): The moon is rock.");
    expect(assign.input.prompt).toContain("Claim: the moon is cheese");
  });
});

describe("the hosted entry (POST /v1/completions)", () => {
  it("forwards to v3 completions under the same request id and answers the gateway envelope", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], text: () => "hosted answer" });
    const sid = await createSession({ model });
    await miner.join(sid);
    const res = await callAt("/v1/completions", { model, prompt: "hello", max_tokens: 8, temperature: 0, top_p: 1, session_id: sid });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body).toMatchObject({ status: "ok", model, router_pool: env.ROUTER_NAME, error: null });
    expect(body.request_id).toBe(res.headers.get("X-Request-ID"));
    expect(body.data.choices[0].text).toBe("hosted answer");
    expect(body.data.request_id).toBe(body.request_id);
  });

  it("a router timeout and the entry's own deadline both answer 504 timeout with the request id", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 0.2, task_timeout: 3 });
    await silent.join(sid);
    const routerTimeout = await callAt("/v1/completions", { prompt: "hello", session_id: sid, timeout: 0.6 });
    expect(routerTimeout.status).toBe(504);
    const a = (await errorOf(routerTimeout)) as any;
    expect(a).toMatchObject({ status: "failed", data: null, error: { code: "timeout" } });

    const entryTimeout = await callAt("/v1/completions", { prompt: "hello", session_id: sid }, { HOSTED_TIMEOUT_MS: "300" });
    expect(entryTimeout.status).toBe(504);
    const b = (await errorOf(entryTimeout)) as any;
    expect(b).toMatchObject({ status: "failed", error: { code: "timeout", message: expect.stringContaining("300 ms") } });
  });
});
