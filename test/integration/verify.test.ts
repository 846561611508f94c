import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PayloadError } from "../../miner-agent/src/payloads.ts";
import { verify } from "../../miner-agent/src/verifier.ts";
import { api, type Miner, type Router, startMiner, startRouter } from "../helpers/network.ts";

// Verified sampling end to end: real miner processes generate with the builtin model and real miners that are
// not in the task re-score the output in one forward pass (miner-agent/src/verifier.ts) and re-run the seeded
// sampler at every position. Honest sampled outputs pass; each cheat (junk, wrong model, perturbed weights, a
// quantized model, inflated usage) fails with its evidence, is an outlier, and the task moves to an honest miner.

const CHEATS = ["junk", "wrong-model", "perturbed-weights", "quantized", "usage-inflate"] as const;
// The look-alikes a step further from the model than the bench's defaults (perturbation 0.1, 4 bits: ≈ 1 % of their
// 48-token outputs match the honest sampler's everywhere: bench/cheats-models.ts), so every output here differs.
const LOOK_ALIKE_ENV: Record<string, Record<string, string>> = {
  "perturbed-weights": { MINER_TEST_PERTURB_SCALE: "0.2" },
  quantized: { MINER_TEST_QUANTIZE_BITS: "3" },
};
let router: Router;
let honest: Miner[] = [];
const cheaters = new Map<string, Miner>();
const addr = (m: Miner) => m.address()!.toLowerCase();

beforeAll(async () => {
  router = await startRouter();
  const started = await Promise.all([
    ...["h1", "h2", "h3"].map((name) => startMiner(router.url, { name })),
    ...CHEATS.map((mode) =>
      startMiner(router.url, { name: `cheat-${mode}`, args: ["--test-dishonest", mode], env: LOOK_ALIKE_ENV[mode] ?? {} }),
    ),
  ]);
  honest = started.slice(0, 3);
  for (const [i, mode] of CHEATS.entries()) cheaters.set(mode, started[3 + i]!);
  await Promise.all(started.map((m) => m.waitFor("ready", undefined, 240_000)));
}, 300_000);

afterAll(async () => {
  await Promise.all([...honest, ...cheaters.values()].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

async function verifySession(miners: Miner[]): Promise<string> {
  const created = await api(router, "/api/v1/sessions", {
    body: { deposit: 1e8, redundancy: 1, max_miners: 3, consensus: "verify", mode: "dedicated", dedicated_miners: miners.map(addr) },
  });
  expect(created.status).toBe(201);
  const sid = created.body.config.id as string;
  for (let i = 0; i < 300; i++) {
    if ((await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= miners.length) return sid;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("miners did not join");
}

const complete = (sid: string, body: Record<string, unknown>) =>
  api(router, `/api/v1/completions/${sid}`, { body: { max_tokens: 48, temperature: 0.8, ...body } });

describe("verified sampling with real miners", () => {
  it("honest sampled, greedy and spot-checked outputs pass; a validator outside the task re-scores each", async () => {
    const sid = await verifySession(honest);
    const bodies = [
      ...(await Promise.all([0, 1, 2].map((i) => complete(sid, { prompt: `The old harbor at night ${i}`, top_p: 0.95, top_k: 40 })))),
      await complete(sid, { prompt: "Winter came to the village", temperature: 0, presence_penalty: 0.5, stop: ["."] }),
      await complete(sid, { prompt: "A signal from the orbit", frequency_penalty: 0.4, verify: { fraction: 0.1 } }),
    ].map((r) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body;
    });
    for (const b of bodies) {
      const c = b.consensus;
      expect(c).toMatchObject({ method: "verify", status: "agreed", outliers: [] });
      expect(c.verification.failed).toEqual({});
      expect(c.verification.validators.length).toBeGreaterThanOrEqual(1);
      expect(c.agreed).not.toContain(c.verification.validators[0]);
      expect(c.verification.tokens).toBe(b.usage.completion_tokens);
    }
    expect(bodies[0].consensus.verification).toMatchObject({ fraction: 1, detection: 1 });
    expect(bodies[0].consensus.verification.checked).toBe(bodies[0].usage.completion_tokens);
    const spot = bodies[4].consensus.verification;
    expect(spot.fraction).toBe(0.1);
    expect(spot.checked).toBe(Math.ceil(0.1 * spot.tokens));
    expect(spot.detection).toBeCloseTo(spot.checked / spot.tokens, 3);
    // The re-scoring ran in real miner processes; a full check re-scores every token, a spot check only up to its
    // last position (never more than the output).
    const done = honest.flatMap((m) => m.events.filter((e) => e.event === "verification_done"));
    expect(done.length).toBeGreaterThanOrEqual(bodies.length);
    expect(done.every((e) => e.failed === 0)).toBe(true);
    const rescored = (b: { task_id: string }) => Number(done.find((e) => e.task_id === b.task_id)?.rescored);
    expect(rescored(bodies[0])).toBe(bodies[0].consensus.verification.tokens);
    expect(rescored(bodies[4])).toBeGreaterThanOrEqual(spot.checked);
    expect(rescored(bodies[4])).toBeLessThanOrEqual(spot.tokens);
  }, 180_000);

  for (const mode of CHEATS) {
    it(`${mode}: the cheating replica fails verification with positions as evidence; an honest miner answers`, async () => {
      const cheater = cheaters.get(mode)!;
      const sid = await verifySession([honest[0]!, honest[1]!, cheater]);
      // Three at once over three one-slot miners: usually one of them is the cheater's (a miner still busy from
      // the test before can leave it out, so up to five rounds).
      const cheaterIn = (t: { assigned_miners: string[] }) => t.assigned_miners.includes(addr(cheater));
      const views: { assigned_miners: string[] }[] = [];
      const results: Awaited<ReturnType<typeof complete>>[] = [];
      for (let round = 0; round < 5 && !views.some(cheaterIn); round++) {
        const batch = await Promise.all([0, 1, 2].map((i) => complete(sid, { prompt: `The garden and the engine ${mode} ${round} ${i}` })));
        results.push(...batch);
        views.push(...(await Promise.all(batch.map((r) => api(router, `/api/v1/tasks/${sid}/${r.body.task_id}`)))).map((v) => v.body));
      }
      const caught = views.filter(cheaterIn) as any[];
      expect(caught.length).toBeGreaterThanOrEqual(1);
      for (const t of caught) {
        expect(t.status, JSON.stringify(t)).toBe("closed");
        expect(t.consensus.method).toBe("verify");
        expect(t.consensus.outliers).toContain(addr(cheater));
        expect(honest.map(addr)).toContain(t.result.miner);
        const evidence = t.consensus.verification.failed[addr(cheater)];
        expect(evidence.count).toBeGreaterThanOrEqual(1);
        expect(evidence.positions.length).toBeGreaterThanOrEqual(1);
        const row = t.replicas.find((r: { miner: string }) => r.miner === addr(cheater));
        expect(row.reason).toMatch(/^verification failed: /);
        if (mode === "usage-inflate") {
          expect(evidence.positions).toEqual([-1]);
          expect(row.reason).toMatch(/usage claims \d+ prompt tokens; the prompt is \d+/);
        } else {
          expect(row.reason).toMatch(/checked tokens differ from what the seeded sampler selects: positions \d+/);
          expect(evidence.positions.every((p: number) => p >= -1 && p < 48)).toBe(true);
        }
      }
      for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(200);
    }, 180_000);
  }

  it("private: only miners allowlisted for the task key verify it, from sealed ids; others never see the text", async () => {
    const [a, b, outsider] = honest as [Miner, Miner, Miner];
    const sid = await verifySession([a, b, outsider]);
    const allow = await api(router, "/api/v1/auth/payload_allowlist", {
      method: "PUT",
      body: { session_id: sid, miners: [addr(a), addr(b)] },
    });
    expect(allow.status).toBe(200);
    const res = await api(router, `/api/v2/completions/${sid}`, {
      body: { prompt: "A private letter about the harbor", private: true, max_tokens: 48, temperature: 0.8, verify: true },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const task = (await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`)).body;
    expect(task.consensus.method, JSON.stringify(task.consensus)).toBe("verify");
    expect(task.consensus.verification.failed).toEqual({});
    expect(task.consensus.verification.checked).toBe(task.result.usage.completion_tokens);
    // The replica and its validator are the two allowlisted miners; the third was never asked.
    expect([addr(a), addr(b)]).toContain(task.result.miner);
    expect(task.consensus.verification.validators).toEqual([[addr(a), addr(b)].find((m) => m !== task.result.miner)]);
    const verified = (m: Miner) => m.events.filter((e) => e.event === "verification_done" && e.session_id === sid);
    expect(verified(outsider)).toEqual([]);
    const validator = [a, b].find((m) => addr(m) === task.consensus.verification.validators[0])!;
    expect(verified(validator)).toHaveLength(1);
    // Nothing the router shows carries the text or the ids: the result is off-chain and sealed.
    expect(task.result.text).toBe("");
    expect(JSON.stringify(task)).not.toContain("token_ids");
  }, 180_000);

  it("private: with no allowlisted validator outside the task it is not verified, and says so", async () => {
    const [a, , outsider] = honest as [Miner, Miner, Miner];
    const sid = await verifySession([a, outsider]);
    const allow = await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: sid, miners: [addr(a)] } });
    expect(allow.status).toBe(200);
    const res = await api(router, `/api/v2/completions/${sid}`, {
      body: { prompt: "Another private letter", private: true, max_tokens: 48, temperature: 0.8, verify: true },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const task = (await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`)).body;
    expect(task.result.miner).toBe(addr(a));
    expect(task.consensus.method).not.toBe("verify");
    expect(task.consensus.note).toMatch(/^no allowlisted validator outside the task serves .*; not verified$/);
    expect(outsider.events.filter((e) => e.event === "verification_done" && e.session_id === sid)).toEqual([]);
  }, 180_000);

  it("a validator given sealed ids that do not open (with the key in hand) fails the replica; a missing key is its own failure", async () => {
    const log = { info() {}, notice() {}, warn() {}, error() {}, event() {} };
    const engine = {
      model: "m",
      rescore: async () => ({ promptIds: [1, 2, 3], logits: new Float32Array(0), vocab: 1, eos: [], decode: () => "", context: 512 }),
    };
    const msg = {
      type: "verify" as const,
      session_id: "s1",
      task_id: "7",
      model: "m",
      input: { prompt: "", prompt_type: 1 as const },
      params: { max_tokens: 8, temperature: 0.8, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 1 },
      token_ids_sealed: "AAAA",
      completion_tokens: 5,
      finish_reason: "length" as const,
      deadline: Date.now() + 1000,
    };
    const garbage = async () => {
      throw new PayloadError("sealed token ids do not open with the task key", undefined, "bad_sealed_ids");
    };
    const answer = await verify(msg, { engine, log, openIds: garbage });
    expect(answer).toMatchObject({ type: "verification", failed: 1, checked: 5, prompt_tokens: 3, failures: [{ pos: -1, token: -1 }] });
    const noKey = async () => {
      throw new PayloadError("not on the allowlist", 403, "forbidden");
    };
    expect(await verify(msg, { engine, log, openIds: noKey })).toMatchObject({ type: "verify_failed" });
  });
});
