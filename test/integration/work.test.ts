import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, freePort, type Miner, type Router, startMiner, startRouter } from "../helpers/network.ts";

// Delegate, validate and factcheck through the real router (wrangler dev) with real miner processes running
// the real engine on the built-in model: two honest miners and one `--test-dishonest junk` miner that answers
// random text (a replica that disagrees). Each runs its own dedicated redundancy-1 session, so a v3 pool of
// the three sessions has exactly one disagreeing replica. Validation answers come from constrained decoding.

const VERDICT = /^VERDICT: (VALID|INVALID|RETRY|NEEDS_SPEC)\nSCORE: (10|[0-9])\nCONFIDENCE: (10|[0-9])$/;
const FACT = /^VERDICT: (SUPPORTED|REFUTED|UNVERIFIABLE)\nSCORE: (10|[0-9])\nCONFIDENCE: (10|[0-9])$/;

let router: Router;
let honestA: Miner;
let honestB: Miner;
let junk: Miner;
let retriever: Server;
const retrieved: unknown[] = [];
let sA = "";
let sB = "";
let sJ = "";

const addr = (m: Miner) => m.address()!.toLowerCase();

async function dedicated(m: Miner): Promise<string> {
  const res = await api(router, "/api/v1/sessions", {
    body: {
      deposit: 10_000_000,
      redundancy: 1,
      max_miners: 1,
      mode: "dedicated",
      dedicated_miners: [addr(m)],
      task_timeout: 60,
    },
  });
  if (res.status !== 201) throw new Error(`session: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.config.id;
}

beforeAll(async () => {
  // A grounding retriever for realtime factchecks: POST {claim, max_documents} → {documents}.
  const port = await freePort();
  retriever = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      retrieved.push(JSON.parse(body));
      res.setHeader("content-type", "application/json");
      res.end(
        JSON.stringify({
          documents: [{ title: "Encyclopedia", url: "https://example.test/water", content: "Water boils at 100 C at sea level." }],
        }),
      );
    });
  });
  await new Promise<void>((r) => retriever.listen(port, "127.0.0.1", () => r()));
  router = await startRouter({
    vars: {
      DEFAULT_SESSION_ID: "",
      VALIDATE_SESSION_POOL: "",
      DELEGATE_SESSION_POOL: "it-delegate-1,it-delegate-2",
      FACTCHECK_STANDARD_SESSION: "",
      FACTCHECK_REALTIME_SESSION: "",
      FACTCHECK_RETRIEVER_URL: `http://127.0.0.1:${port}/retrieve`,
    },
  });
  [honestA, honestB, junk] = await Promise.all([
    startMiner(router.url, { name: "honest-a", args: ["--stake", "1000"] }),
    startMiner(router.url, { name: "honest-b", args: ["--stake", "1000"] }),
    startMiner(router.url, { name: "junk", args: ["--stake", "50000", "--test-dishonest", "junk"] }),
  ]);
  await Promise.all([honestA, honestB, junk].map((m) => m.waitFor("ready", undefined, 120_000)));
  // The delegate pool's sessions are left to be created on first use. Configured ids are reserved (no key may
  // create them with other settings), so factchecks that need honest miners name their sessions.
  [sA, sB, sJ] = await Promise.all([dedicated(honestA), dedicated(honestB), dedicated(junk)]);
});

afterAll(async () => {
  await Promise.all([honestA, honestB, junk].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await router?.stop();
  await new Promise((r) => retriever?.close(r));
});

describe("validate", () => {
  it("v1 and v2: a well-formed verdict from constrained decoding, identical on two honest miners", async () => {
    const v1 = await api(router, "/api/v1/validate", {
      body: { session_id: sA, task_request_input: "What is 2 + 2?", task_result_output: "4", evaluation_mode: "strict" },
    });
    expect(v1.status, JSON.stringify(v1.body)).toBe(200);
    expect(v1.body).toMatchObject({ status: "ok", version: "v1", request_id: v1.headers.get("x-request-id") });
    expect(["VALID", "INVALID", "RETRY", "NEEDS_SPEC"]).toContain(v1.body.verdict);
    expect(v1.body.score).toBeGreaterThanOrEqual(0);
    expect(v1.body.score).toBeLessThanOrEqual(1);
    expect(v1.body.confidence).toBeGreaterThanOrEqual(0);
    expect(v1.body.replicas[0].output).toMatch(VERDICT);
    expect(v1.body.replicas[0]).toMatchObject({ session_id: sA, miners: [addr(honestA)], status: "ok" });

    const onA = await api(router, "/api/v2/validate", {
      body: { session_id: sA, claim: "The sky is green.", policy: "be strict", context: "colour facts" },
    });
    const onB = await api(router, "/api/v2/validate", {
      body: { session_id: sB, claim: "The sky is green.", policy: "be strict", context: "colour facts" },
    });
    expect(onA.status).toBe(200);
    expect(onA.body.replicas[0].output).toMatch(VERDICT);
    expect(onB.body.replicas[0].output).toBe(onA.body.replicas[0].output);
    expect(onB.body.replicas[0].hash).toBe(onA.body.replicas[0].hash);
  });

  it("v3 over a pool with a junk replica: majority of the honest verdicts; median_of_means agrees", async () => {
    const claim = "Every miner signs its result before revealing it.";
    const res = await api(router, "/api/v3/validate", { body: { claim, consensus: { replicas: 3, session_pool: [sA, sB, sJ] } } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({
      status: "ok",
      version: "v3",
      consensus: { strategy: "majority", status: "majority", agreed: [0, 1], failed: [2] },
    });
    expect(res.body.replicas[2]).toMatchObject({ session_id: sJ, status: "failed", error: { code: "invalid_output" } });
    expect(res.body.replicas[0].output).toBe(res.body.replicas[1].output);

    // Three replicas over two sessions: honest A answers twice, so the agreement is two miners' (a quorum of
    // three replicas), not unanimous: quorums count distinct miners.
    const mom = await api(router, "/api/v3/validate", {
      body: { claim, consensus: { replicas: 3, session_pool: [sA, sB], strategy: "median_of_means" } },
    });
    expect(mom.body).toMatchObject({
      status: "ok",
      verdict: res.body.verdict,
      score: res.body.score,
      consensus: { strategy: "median_of_means", status: "majority", agreed: [0, 1, 2] },
    });
  });

  it("v3 with no session pool configured → 503 configuration_error; v1 with no session → 400 session_required", async () => {
    const v3 = await api(router, "/api/v3/validate", { body: { claim: "x" } });
    expect(v3.status).toBe(503);
    expect(v3.body.error.code).toBe("configuration_error");
    expect(v3.body.request_id).toBe(v3.headers.get("x-request-id"));
    const v1 = await api(router, "/api/v1/validate", { body: { task_request_input: "x", task_result_output: "y" } });
    expect(v1.status).toBe(400);
    expect(v1.body.error.code).toBe("session_required");
  });
});

describe("delegate", () => {
  const objective = "Describe the network in one sentence.";

  it("v1 and v2 run once in one session; v2 gives the same output on either honest miner", async () => {
    const v1 = await api(router, "/api/v1/delegate", {
      body: {
        session_id: sA,
        task_request_input: "Summarise: routers and miners.",
        task_domain: "docs",
        task_type: "summary",
        max_tokens: 12,
      },
    });
    expect(v1.status, JSON.stringify(v1.body)).toBe(200);
    expect(v1.body).toMatchObject({ status: "ok", version: "v1", session_id: sA });
    expect(typeof v1.body.output).toBe("string");
    const a = await api(router, "/api/v2/delegate", {
      body: { session_id: sA, objective, input: { audience: "engineers" }, execution: { max_tokens: 12 } },
    });
    const b = await api(router, "/api/v2/delegate", {
      body: { session_id: sB, objective, input: { audience: "engineers" }, execution: { max_tokens: 12 } },
    });
    expect(a.body.output).toBe(b.body.output);
    expect(a.body.usage.completion_tokens).toBeGreaterThan(0);
  });

  it("v3 with one disagreeing replica under each strategy and disagreement policy", async () => {
    const pool = [sA, sB, sJ];
    const body = (consensus: Record<string, unknown>) => ({
      body: { objective, execution: { max_tokens: 12 }, consensus: { replicas: 3, session_pool: pool, ...consensus } },
    });
    const honest = (await api(router, "/api/v2/delegate", { body: { session_id: sA, objective, execution: { max_tokens: 12 } } })).body
      .output;

    const majority = await api(router, "/api/v3/delegate", body({}));
    expect(majority.status, JSON.stringify(majority.body)).toBe(200);
    expect(majority.body).toMatchObject({
      status: "ok",
      output: honest,
      consensus: { strategy: "majority", status: "majority", agreed: [0, 1], disagreed: [2] },
    });
    expect(majority.body.replicas.map((r: { miners: string[] }) => r.miners[0])).toEqual([honestA, honestB, junk].map(addr));
    expect(majority.body.replicas[2].output).not.toBe(honest);
    for (const r of majority.body.replicas)
      expect(r).toMatchObject({ status: "ok", task_id: expect.stringMatching(/^\d+$/), hash: expect.stringMatching(/^0x/) });

    const hard = await api(router, "/api/v3/delegate", body({ disagreement_policy: "fail_hard" }));
    expect(hard.status, JSON.stringify(hard.body)).toBe(409);
    expect(hard.body).toMatchObject({ status: "failed", error: { code: "no_consensus" }, request_id: hard.headers.get("x-request-id") });
    expect(hard.body.replicas).toHaveLength(3);

    const all = await api(router, "/api/v3/delegate", body({ disagreement_policy: "return_all" }));
    expect(all.body).toMatchObject({ status: "ok", output: honest });
    expect(all.body.consensus.candidates).toHaveLength(2);

    // The junk miner declared a far larger stake: weighted by stake it outweighs both honest miners.
    const byStake = await api(router, "/api/v3/delegate", body({ strategy: "weighted", weight_by: "stake" }));
    expect(byStake.body).toMatchObject({ status: "ok", consensus: { strategy: "weighted", weight_by: "stake", agreed: [2] } });
    expect(byStake.body.output).toBe(byStake.body.replicas[2].output);
    const byRep = await api(router, "/api/v3/delegate", body({ strategy: "weighted" }));
    expect(byRep.body).toMatchObject({ output: honest, consensus: { weight_by: "reputation", agreed: [0, 1] } });

    const mom = await api(router, "/api/v3/delegate", body({ strategy: "median_of_means" }));
    expect(mom.status).toBe(200);
    expect(mom.body.consensus.strategy).toBe("median_of_means");
  });

  it("v3 without a pool in the request fans out across the configured pool, created on first use", async () => {
    const res = await api(router, "/api/v3/delegate", { body: { objective, execution: { max_tokens: 8 }, consensus: { replicas: 3 } } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.consensus.session_pool).toEqual(["it-delegate-1", "it-delegate-2"]);
    expect(res.body.replicas.map((r: { session_id: string }) => r.session_id)).toEqual(["it-delegate-1", "it-delegate-2", "it-delegate-1"]);
    const sessions = await api(router, "/api/v1/sessions/it-delegate-2");
    expect(sessions.status).toBe(200);
  });

  it("all replicas fail → 502 status failed with every replica's payload and error", async () => {
    const unserved = await api(router, "/api/v1/sessions", { body: { deposit: 1000, model: "edge/nobody-serves-this" } });
    const res = await api(router, "/api/v3/delegate", {
      body: { objective, consensus: { replicas: 3, session_pool: [unserved.body.config.id] } },
    });
    expect(res.status).toBe(502);
    expect(res.body).toMatchObject({ status: "failed", error: { code: "all_replicas_failed" }, consensus: { failed: [0, 1, 2] } });
    for (const r of res.body.replicas)
      expect(r).toMatchObject({
        status: "failed",
        error: { code: "no_miner_available" },
        payload: { input: { prompt: expect.stringContaining(objective) } },
      });
  });
});

describe("factcheck", () => {
  it("standard and realtime (grounded by the configured retriever) on the sessions they name", async () => {
    const std = await api(router, "/api/v1/factcheck", { body: { session_id: sA, claim: "Water boils at 100 C at sea level." } });
    expect(std.status, JSON.stringify(std.body)).toBe(200);
    expect(std.body).toMatchObject({ status: "ok", mode: "standard", grounding: { source: "none" } });
    expect(["SUPPORTED", "REFUTED", "UNVERIFIABLE"]).toContain(std.body.verdict);
    expect(std.body.replicas[0]).toMatchObject({ session_id: sA, miners: [addr(honestA)] });
    expect(std.body.replicas[0].output).toMatch(FACT);

    const rt = await api(router, "/api/v1/fact-check", {
      body: { session_id: sB, claim: "Water boils at 100 C at sea level.", mode: "realtime" },
    });
    expect(rt.status, JSON.stringify(rt.body)).toBe(200);
    expect(rt.body).toMatchObject({
      status: "ok",
      mode: "realtime",
      grounding: { source: "retriever", documents: [{ title: "Encyclopedia" }] },
    });
    expect(rt.body.replicas[0]).toMatchObject({ session_id: sB, miners: [addr(honestB)] });
    expect(rt.body.replicas[0].output).toMatch(FACT);
    expect(retrieved).toContainEqual({ claim: "Water boils at 100 C at sea level.", max_documents: 5 });
  });
});

describe("deadlines below the floor", () => {
  // Before fair deadlines these were taken and failed 504 `timeout` after 0.3 s (a timeout held against the
  // miner); now each session refuses them at once, naming its floor, and the route answers the client's error.
  it("delegate: every replica refused the deadline → 400 deadline_too_short with the floor in the replica's evidence", async () => {
    const res = await api(router, "/api/v2/delegate", {
      body: { session_id: sB, objective: "Write a long essay.", execution: { max_tokens: 400, timeout: 0.3 } },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body).toMatchObject({
      status: "failed",
      error: { code: "deadline_too_short" },
      request_id: res.headers.get("x-request-id"),
    });
    expect(res.body.replicas[0]).toMatchObject({ session_id: sB, status: "failed", error: { code: "deadline_too_short" } });
    expect(res.body.replicas[0].error.details.floor_s).toBeGreaterThan(0.3);
  });

  it("the hosted entry (POST /v1/completions) answers the same in its envelope, with the request id", async () => {
    const ok = await api(router, "/v1/completions", {
      body: { session_id: sA, prompt: "The edge network", max_tokens: 4, temperature: 0 },
    });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body).toMatchObject({ status: "ok", model: "edge/tiny-gpt2", error: null, request_id: ok.headers.get("x-request-id") });
    expect(ok.body.data.choices[0].text.length).toBeGreaterThan(0);
    const late = await api(router, "/v1/completions", {
      body: { session_id: sA, prompt: "Write a long essay.", max_tokens: 400, timeout: 0.3 },
    });
    expect(late.status, JSON.stringify(late.body)).toBe(400);
    expect(late.body).toMatchObject({
      status: "failed",
      data: null,
      error: { code: "deadline_too_short", details: { field: "timeout", requested_s: 0.3, max_tokens: 400 } },
      request_id: late.headers.get("x-request-id"),
    });
  });
});
