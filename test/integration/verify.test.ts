import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter } from "../helpers/network.ts";

// Verified sampling end to end: real miner processes generate with the builtin model and real miners that are
// not in the task re-score the output in one forward pass (miner-agent/src/verifier.ts) and re-run the seeded
// sampler at every position. Honest sampled outputs pass; each cheat (junk, wrong model, perturbed logits,
// inflated usage) fails with its evidence, is an outlier, and the task moves to an honest miner.

const CHEATS = ["junk", "wrong-model", "perturbed-weights", "usage-inflate"] as const;
let router: Router;
let honest: Miner[] = [];
const cheaters = new Map<string, Miner>();
const addr = (m: Miner) => m.address()!.toLowerCase();

beforeAll(async () => {
  router = await startRouter();
  const started = await Promise.all([
    ...["h1", "h2", "h3"].map((name) => startMiner(router.url, { name })),
    ...CHEATS.map((mode) => startMiner(router.url, { name: `cheat-${mode}`, args: ["--test-dishonest", mode] })),
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
    // The re-scoring ran in real miner processes.
    const done = honest.flatMap((m) => m.events.filter((e) => e.event === "verification_done"));
    expect(done.length).toBeGreaterThanOrEqual(bodies.length);
    expect(done.every((e) => e.failed === 0)).toBe(true);
  }, 180_000);

  for (const mode of CHEATS) {
    it(`${mode}: the cheating replica fails verification with positions as evidence; an honest miner answers`, async () => {
      const cheater = cheaters.get(mode)!;
      const sid = await verifySession([honest[0]!, honest[1]!, cheater]);
      // Three at once over three one-slot miners: one of them is the cheater's.
      const results = await Promise.all([0, 1, 2].map((i) => complete(sid, { prompt: `The garden and the engine ${mode} ${i}` })));
      const views = await Promise.all(results.map((r) => api(router, `/api/v1/tasks/${sid}/${r.body.task_id}`)));
      const caught = views.map((v) => v.body).filter((t) => t.assigned_miners.includes(addr(cheater)));
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
      for (const r of results) expect(r.status).toBe(200);
    }, 180_000);
  }
});
