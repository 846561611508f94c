import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EMBEDDING_TOLERANCE, replicaDistance } from "../../durable-objects/session-queue/embedding-consensus.ts";
import { type Embedder, loadEmbedder } from "../../miner-agent/src/embedder.ts";
import { embedWeightsDir } from "../../miner-agent/src/model/embedding.ts";
import { api, type Miner, MODEL_CACHE, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// POST /api/v1/embeddings end to end: real wrangler dev, real miner processes embedding with the built-in
// edge/tiny-embed (transformers.js feature extraction), and the same embedder loaded here in-process. Honest
// miners' vectors must equal what the embedder gives here for the same texts; a miner started with the test-only
// `--test-dishonest junk-embeddings` (random unit vectors, no model) must be the named outlier and penalised.

let router: Router;
let honest: Miner[] = [];
let cheat: Miner;
let local: Embedder;
const addr = (m: Miner) => m.address()!.toLowerCase();

beforeAll(async () => {
  router = await startRouter();
  const started = await Promise.all([
    startMiner(router.url, { name: "h1" }),
    startMiner(router.url, { name: "h2" }),
    startMiner(router.url, { name: "h3" }),
    startMiner(router.url, { name: "junk-embeddings", args: ["--test-dishonest", "junk-embeddings"] }),
  ]);
  honest = started.slice(0, 3);
  cheat = started[3]!;
  local = await loadEmbedder({ model: "edge/tiny-embed", cacheDir: MODEL_CACHE, device: "cpu", threads: 1 });
  await Promise.all(started.map((m) => m.waitFor("ready", undefined, 120_000)));
});

afterAll(async () => {
  await Promise.all([...honest, cheat].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await local?.dispose();
  await router?.stop();
});

/** A dedicated session of `miners`, k = their number. */
async function session(miners: Miner[]): Promise<string> {
  const created = await api(router, "/api/v1/sessions", {
    body: {
      deposit: 1_000_000,
      redundancy: miners.length,
      max_miners: miners.length,
      mode: "dedicated",
      dedicated_miners: miners.map(addr),
    },
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  expect(created.body.config.embedding_model).toBe("edge/tiny-embed");
  return created.body.config.id as string;
}

const embed = (sid: string | null, input: string | string[]) =>
  api(router, sid ? `/api/v1/embeddings/${sid}` : "/api/v1/embeddings", { body: { input } });

const TEXTS = [
  "The edge network answers every request with a quorum.",
  "zebra",
  "Miners run real models on their own hardware, anywhere.",
  "ünïcödé ✓ — and some digits: 31337",
];

/** The builtin model's dimension, as models/embed/manifest.json (the committed weights) says. */
const DIM: number = JSON.parse(readFileSync(join(embedWeightsDir(), "manifest.json"), "utf8")).hidden_size;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe("embeddings served by real miners", () => {
  it("k = 3 honest miners: the vectors equal the embedder's own, of the model's dimension, in input order", async () => {
    const sid = await session(honest);
    const res = await embed(sid, TEXTS);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const mine = await local.embed(TEXTS);
    expect(res.body.model).toBe("edge/tiny-embed");
    expect(res.body.data.map((d: any) => d.index)).toEqual([0, 1, 2, 3]);
    const vectors = res.body.data.map((d: any) => d.embedding as number[]);
    for (const v of vectors) expect(v).toHaveLength(DIM);
    // Each text's vector is the in-process vector of that same text (distance within the tolerance) ...
    expect(replicaDistance(vectors, mine)).toBeLessThanOrEqual(EMBEDDING_TOLERANCE);
    for (let i = 0; i < TEXTS.length; i++) for (let k = 0; k < DIM; k += 32) expect(vectors[i][k]).toBeCloseTo(mine[i][k], 5);
    // ... and not another text's: the order is kept.
    expect(replicaDistance([vectors[0]], [mine[1]])).toBeGreaterThan(0.5);
    expect(res.body.consensus).toMatchObject({ method: "embedding", status: "agreed", outliers: [] });
    expect(new Set(res.body.consensus.agreed)).toEqual(new Set(honest.map(addr)));
    for (const m of honest) expect(res.body.consensus.embedding.distances[addr(m)]).toBeLessThanOrEqual(EMBEDDING_TOLERANCE);
    expect(res.body.usage.prompt_tokens).toBeGreaterThan(0);
    expect(res.body.usage.total_tokens).toBe(res.body.usage.prompt_tokens);
    // The session was charged exactly that, and the job is in its task list.
    const s = await api(router, `/api/v1/sessions/${sid}`);
    expect(s.body.usage.used).toBe(res.body.usage.prompt_tokens);
    const tasks = await api(router, `/api/v1/tasks/${sid}`);
    expect(tasks.body.tasks[0]).toMatchObject({ task_id: res.body.task_id, kind: "embedding", status: "closed" });
    // The real miners did the work (one embed each).
    for (const m of honest) await m.waitFor("validation_done", (e) => e.task_id === res.body.task_id, 10_000);
  });

  it("a junk-embeddings miner is the outlier: the honest vectors answer and its ledger has the penalty", async () => {
    const sid = await session([honest[0], honest[1], cheat]);
    for (let i = 0; i < 2; i++) {
      const texts = [`honest text number ${i}`, "another one"];
      const res = await embed(sid, texts);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const mine = await local.embed(texts);
      expect(
        replicaDistance(
          res.body.data.map((d: any) => d.embedding),
          mine,
        ),
      ).toBeLessThanOrEqual(EMBEDDING_TOLERANCE);
      expect(res.body.consensus.outliers).toEqual([addr(cheat)]);
      expect(res.body.consensus.embedding.distances[addr(cheat)]).toBeGreaterThan(0.5);
      expect(res.body.consensus.agreed).toHaveLength(2);
      const entry = await until(async () => {
        const ledger = await api(router, `/api/v1/miners/${addr(cheat)}/ledger`);
        return ledger.body.entries.find((e: any) => e.task_id === res.body.task_id);
      }, 10_000);
      expect(entry).toMatchObject({ kind: "penalty" });
    }
    await cheat.waitFor("dishonest", (e) => e.mode === "junk-embeddings", 5_000);
  });

  it("without a session id the default session serves it (k = 1)", async () => {
    // At k = 1 nothing can outvote a liar: the junk miner leaves first, so the one replica is an honest one.
    await cheat.stop("SIGKILL");
    await until(async () => {
      const s = await api(router, "/api/v1/sessions/default");
      if (s.status === 404) return true; // created on first use: only miners still alive can join it
      const connected: string[] = s.body.usage?.connected_miners ?? [];
      return connected.length > 0 && !connected.map((m) => m.toLowerCase()).includes(addr(cheat));
    }, 20_000);
    const res = await embed(null, "one text, the default session");
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.session_id).toBe("default");
    expect(res.body.data).toHaveLength(1);
    const [mine] = await local.embed(["one text, the default session"]);
    expect(replicaDistance([res.body.data[0].embedding], [mine])).toBeLessThanOrEqual(EMBEDDING_TOLERANCE);
  });

  it("latency: the median of 20 requests of 1 and of 16 texts at k = 1 and k = 3", async () => {
    const k1 = await session([honest[0]]);
    const k3 = await session(honest);
    const batch = Array.from({ length: 16 }, (_, i) => `text ${i}: the edge network embeds what its clients send, ${"word ".repeat(i)}`);
    const figures: Record<string, number> = {};
    for (const [name, sid] of [
      ["k=1", k1],
      ["k=3", k3],
    ] as const) {
      for (const [size, input] of [
        ["1 text", ["a single short text to embed"]],
        ["16 texts", batch],
      ] as const) {
        const ms: number[] = [];
        for (let i = 0; i < 20; i++) {
          const t0 = performance.now();
          const res = await embed(sid, [...input]);
          ms.push(performance.now() - t0);
          expect(res.status).toBe(200);
          expect(res.body.data).toHaveLength(input.length);
        }
        figures[`${name}, ${size}`] = Math.round(median(ms));
      }
    }
    console.log(`embedding latency medians (ms, 20 requests each): ${JSON.stringify(figures)}`);
    for (const v of Object.values(figures)) expect(v).toBeGreaterThan(0);
  });
});
