import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// Similarity consensus end to end: real miner processes sample at temperature 0.8, one of them is a junk miner,
// and the validators are real miners running the builtin embedding model (transformers.js feature extraction on
// edge/tiny-embed). The client pins the seed, so the honest replicas sample the same text while the junk one
// differs by hash: the validators' distances must agree the honest pair (0 apart) and name the junk replica the
// outlier (beyond the default threshold), task after task. (Without a pinned seed each replica samples on its own,
// and the builtin language model's independent samples are mostly unrelated text, as far apart as junk: README
// "Similarity consensus", models/embed/calibrate.ts.)

const TASKS = 4;
let router: Router;
let honest: Miner[] = [];
let junk: Miner;
const addr = (m: Miner) => m.address()!.toLowerCase();

beforeAll(async () => {
  router = await startRouter();
  const started = await Promise.all([
    startMiner(router.url, { name: "h1" }),
    startMiner(router.url, { name: "h2" }),
    startMiner(router.url, { name: "junk", args: ["--test-dishonest", "junk"] }),
  ]);
  honest = started.slice(0, 2);
  junk = started[2]!;
  await Promise.all(started.map((m) => m.waitFor("ready", undefined, 120_000)));
});

afterAll(async () => {
  await Promise.all([...honest, junk].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

describe("similarity consensus with real miners and the builtin embedding model", () => {
  it("independent honest samples agree; the junk replica is the outlier every time", async () => {
    const created = await api(router, "/api/v1/sessions", {
      body: {
        deposit: 1_000_000,
        redundancy: 3,
        max_miners: 3,
        consensus: "similarity",
        mode: "dedicated",
        dedicated_miners: [...honest, junk].map(addr),
      },
    });
    expect(created.status).toBe(201);
    const sid = created.body.config.id as string;
    expect(created.body.config.consensus).toBe("similarity");
    expect(created.body.config.embedding_model).toBe("edge/tiny-embed");
    const threshold = created.body.config.dispersion_threshold as number;

    for (let i = 0; i < TASKS; i++) {
      const res = await api(router, `/api/v1/completions/${sid}`, {
        body: { prompt: `The children walked to the river and ${i}`, max_tokens: 48, temperature: 0.8, top_p: 0.95, seed: 1000 + i },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const c = res.body.consensus;
      expect(c.method).toBe("similarity");
      expect(c.status).toBe("agreed");
      expect(c.outliers).toEqual([addr(junk)]);
      expect(new Set(c.agreed)).toEqual(new Set(honest.map(addr)));
      expect(c.similarity.model).toBe("edge/tiny-embed");
      // Nobody outside this dedicated session can validate, so all three replicas do: the median of three
      // outvotes one liar (a replica never validates its own task alone).
      expect(new Set(c.similarity.validators)).toEqual(new Set([...honest, junk].map(addr)));
      expect(c.similarity.distances[addr(junk)]).toBeGreaterThan(threshold);
      for (const h of honest) expect(c.similarity.distances[addr(h)]).toBeLessThanOrEqual(threshold);
      // The honest pair sampled the same text from the pinned seed; the junk replica's differs, so validators judged.
      const task = (await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`)).body;
      const honestHashes = new Set(task.replicas.filter((r: any) => r.miner !== addr(junk)).map((r: any) => r.hash));
      expect(honestHashes.size).toBe(1);
      expect(task.replicas.find((r: any) => r.miner === addr(junk)).hash).not.toBe([...honestHashes][0]);
      // The answer is the central honest sample, never the junk.
      expect(res.body.choices[0].text).toBe(task.result.text);
      expect(honest.map(addr)).toContain(task.result.miner);
    }
    // Validation work ran in a real miner process: the builtin embedder loaded and answered.
    const validated = [...honest, junk].flatMap((m) => m.events.filter((e) => e.event === "validation_done"));
    expect(validated.length).toBe(3 * TASKS);

    // The junk miner's outlier record reached the pool's reputation (outcomes are reported in batches).
    type Node = { address: string; reputation: { outliers: number } };
    const miners = await until(async () => {
      const nodes = (await api(router, "/api/v1/miners")).body.nodes as Node[];
      return nodes.find((n) => n.address === addr(junk))?.reputation.outliers === TASKS ? nodes : null;
    });
    for (const h of honest) expect(miners.find((n) => n.address === addr(h))?.reputation.outliers).toBe(0);
  });
});
