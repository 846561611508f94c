// `node models/embed/calibrate.ts`: calibrates the similarity-consensus threshold offline, in one process.
// Samples what `npm run bench:cheats -- --consensus=similarity` makes miners answer (the bench's prompts,
// temperature 0.8, 48 tokens, each replica its own seed): three honest samples of the builtin language
// model per prompt, one junk answer (dishonest.ts' junk: random filler words) and one sample of the
// wrong-model look-alike; embeds them with the builtin embedder (or `--embedder=<folder>`) and judges each
// k = 3 task (two honest + one cheater, and three honest) with durable-objects/similarity.ts at each threshold.
//
//   --prompts=N (40)  --max-tokens=N (48)  --temperature=T (0.8)  --texts=<file> reuse samples written by --out
//   --out=<file>  write the samples  --embedder=<id or folder> (edge/tiny-embed)
//   --natural         models/prompts.ts' everyday openings ("The river", "She opened the door and") instead
import { randomBytes, randomInt } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { distanceMatrix, judgeSimilarity } from "../../durable-objects/similarity.ts";
import { prepareTestMiner } from "../../miner-agent/src/dishonest.ts";
import { loadEmbedder } from "../../miner-agent/src/embedder.ts";
import { loadTransformersEngine } from "../../miner-agent/src/engine.ts";
import { createLogger } from "../../miner-agent/src/log.ts";
import { BUILTIN_MODEL_ID } from "../../miner-agent/src/model/build.ts";
import { PROMPTS as NATURAL } from "../prompts.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const PROMPTS = Number(args.get("prompts") ?? 40);
const MAX_TOKENS = Number(args.get("max-tokens") ?? 48);
const TEMPERATURE = Number(args.get("temperature") ?? 0.8);
const cacheDir = process.env.MINER_CACHE_DIR || join(tmpdir(), "embed-eval-cache");

// bench/cheats.ts' prompts and dishonest.ts' junk filler words (copied: neither exports them).
const WORDS = ["river", "stone", "light", "market", "engine", "garden", "signal", "harbor", "winter", "paper", "orbit", "forest"];
const JUNK = ["lorem", "ipsum", "dolor", "sit", "amet", "quux", "zorp", "blarg", "fnord", "wibble", "plugh", "xyzzy"];
const prompt = (i: number) => {
  if (args.has("natural")) return NATURAL[i % NATURAL.length];
  const w = (k: number) => WORDS[(i * 7 + k * 5) % WORDS.length];
  return `${w(0)} ${w(1)} ${i} ${w(2)}`;
};
const junk = () => Array.from({ length: MAX_TOKENS }, () => ` ${JUNK[randomInt(JUNK.length)]}${randomBytes(1)[0] % 10}`).join("");

interface Samples {
  prompts: string[];
  honest: string[][];
  junk: string[];
  "wrong-model": string[];
}

async function sample(): Promise<Samples> {
  const log = createLogger({ format: "text", quiet: true });
  const wrongPath = (await prepareTestMiner({ mode: "wrong-model", model: BUILTIN_MODEL_ID, cacheDir, log })).loadModel!;
  const honest = await loadTransformersEngine({ model: BUILTIN_MODEL_ID, device: "cpu", cacheDir, threads: 1 });
  const wrong = await loadTransformersEngine({ model: wrongPath, device: "cpu", cacheDir, threads: 1 });
  const params = (seed: number) => ({
    max_tokens: MAX_TOKENS,
    temperature: TEMPERATURE,
    top_p: 1,
    top_k: 0,
    presence_penalty: 0,
    frequency_penalty: 0,
    stop: [],
    seed,
  });
  const out: Samples = { prompts: [], honest: [], junk: [], "wrong-model": [] };
  for (let i = 0; i < PROMPTS; i++) {
    const input = { prompt: prompt(i), prompt_type: 0 as const };
    const h: string[] = [];
    for (let s = 0; s < 3; s++) h.push((await honest.generate({ input, params: params(randomInt(2 ** 31 - 1)) })).text);
    out.prompts.push(input.prompt);
    out.honest.push(h);
    out.junk.push(junk());
    out["wrong-model"].push((await wrong.generate({ input, params: params(randomInt(2 ** 31 - 1)) })).text);
  }
  await Promise.all([honest.dispose(), wrong.dispose()]);
  return out;
}

const q = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))];
const stats = (a: number[]) =>
  `n=${a.length} min ${q(a, 0).toFixed(3)} p05 ${q(a, 0.05).toFixed(3)} p50 ${q(a, 0.5).toFixed(3)} p95 ${q(a, 0.95).toFixed(3)} max ${q(a, 1).toFixed(3)}`;

async function main(): Promise<void> {
  const samples: Samples = args.has("texts") ? JSON.parse(readFileSync(args.get("texts")!, "utf8")) : await sample();
  if (args.has("out")) writeFileSync(args.get("out")!, JSON.stringify(samples, null, 1));
  const embedder = await loadEmbedder({ model: args.get("embedder") ?? "edge/tiny-embed", cacheDir, device: "cpu", threads: 1 });
  const n = samples.prompts.length;
  const hv = await Promise.all(samples.honest.map((h) => embedder.embed(h)));
  const cheats = { junk: await embedder.embed(samples.junk), "wrong-model": await embedder.embed(samples["wrong-model"]) };
  await embedder.dispose();

  const pairwise = hv.flatMap((v) => distanceMatrix(v).flatMap((row, i) => row.filter((_, j) => j > i)));
  console.log(`${embedder.model}, ${n} prompts, ${MAX_TOKENS} tokens at temperature ${TEMPERATURE}`);
  console.log(`  honest–honest      ${stats(pairwise)}`);
  // Each task: two honest samples and a cheater (its distance to the nearer honest one), or three honest.
  const tasks = Object.entries(cheats).map(([kind, cv]) => ({ kind, matrices: hv.map((v, i) => distanceMatrix([v[0], v[1], cv[i]])) }));
  for (const t of tasks) console.log(`  honest–${t.kind.padEnd(12)} ${stats(t.matrices.map((d) => Math.min(d[0][2], d[1][2])))}`);
  const honestTasks = hv.map((v) => distanceMatrix(v));
  console.log("  threshold: false accusations of honest replicas / cheaters caught");
  for (let th = 0.3; th <= 1.0001; th += 0.05) {
    const accused = honestTasks.reduce((s, d) => s + judgeSimilarity(d, th).outliers.length, 0);
    const parts = tasks.map((t) => {
      let caught = 0;
      let wrongly = 0;
      for (const d of t.matrices) {
        const j = judgeSimilarity(d, th);
        caught += j.outliers.includes(2) ? 1 : 0;
        wrongly += j.outliers.filter((o) => o !== 2).length;
      }
      return `${t.kind} caught ${caught}/${n}, honest accused ${wrongly}/${2 * n}`;
    });
    console.log(`  ${th.toFixed(2)}  all-honest accused ${accused}/${3 * n}; ${parts.join("; ")}`);
  }
}

await main();
