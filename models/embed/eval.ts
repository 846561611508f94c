// `node models/embed/eval.ts [model]`: the held-out evaluation (eval-pairs.jsonl) run through the miner's own
// embedder (transformers.js feature extraction on the ONNX the miner builds), and a check that this ONNX
// reproduces training: token ids of reference.json's texts equal the Python tokenizer's, and their vectors
// equal torch's. `model` defaults to the builtin edge/tiny-embed; a folder path evaluates another model (e.g.
// the old random-vector one) on the same pairs.
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoTokenizer } from "@huggingface/transformers";
import { loadEmbedder } from "../../miner-agent/src/embedder.ts";
import { BUILTIN_EMBEDDING_MODEL_ID, ensureBuiltinEmbeddingModel } from "../../miner-agent/src/model/embedding.ts";

interface Pair {
  kind: "paraphrase" | "related" | "unrelated";
  a: string;
  b: string;
}
interface Reference {
  texts: string[];
  ids: number[][];
  vectors: number[][];
}

const here = import.meta.dirname;
const model = process.argv[2] ?? BUILTIN_EMBEDDING_MODEL_ID;
const cacheDir = process.env.MINER_CACHE_DIR || join(tmpdir(), "embed-eval-cache");
const pairs: Pair[] = readFileSync(join(here, "eval-pairs.jsonl"), "utf8")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l));

const cosDist = (a: number[], b: number[]) => 1 - a.reduce((s, x, i) => s + x * b[i], 0);
/** P(a distance from `pos` < one from `neg`), ties half: how well distances rank `pos` pairs closer. */
function auc(pos: number[], neg: number[]): number {
  let s = 0;
  for (const p of pos) for (const n of neg) s += p < n ? 1 : p === n ? 0.5 : 0;
  return s / (pos.length * neg.length);
}

const embedder = await loadEmbedder({ model, cacheDir, device: "cpu", threads: 1 });
const a = await embedder.embed(pairs.map((p) => p.a));
const b = await embedder.embed(pairs.map((p) => p.b));
const by: Record<string, number[]> = {};
pairs.forEach((p, i) => {
  by[p.kind] ??= [];
  by[p.kind].push(cosDist(a[i], b[i]));
});
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const figures = {
  model,
  ...Object.fromEntries(Object.entries(by).map(([k, d]) => [`mean_distance_${k}`, +mean(d).toFixed(4)])),
  auc_paraphrase_vs_unrelated: +auc(by.paraphrase, by.unrelated).toFixed(4),
  auc_related_vs_unrelated: +auc(by.related, by.unrelated).toFixed(4),
};
console.log(JSON.stringify(figures));

// Hand-written paraphrases that share almost no words (not WordNet, not augmented): each a_i against its b_i,
// and against every other b_j as unrelated.
const hand: { a: string; b: string }[] = readFileSync(join(here, "handwritten-pairs.jsonl"), "utf8")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l));
const ha = await embedder.embed(hand.map((p) => p.a));
const hb = await embedder.embed(hand.map((p) => p.b));
const same = hand.map((_, i) => cosDist(ha[i], hb[i]));
const other = hand.flatMap((_, i) => hand.flatMap((__, j) => (i === j ? [] : [cosDist(ha[i], hb[j])])));
console.log(
  JSON.stringify({
    handwritten_pairs: hand.length,
    mean_distance_paraphrase: +mean(same).toFixed(4),
    mean_distance_unrelated: +mean(other).toFixed(4),
    auc: +auc(same, other).toFixed(4),
  }),
);

// Embedding jobs' EMBEDDING_TOLERANCE rests on how close two different texts can be: the closest two of the
// set's distinct texts (and whether threads change a vector at all).
const texts = [...new Set(pairs.flatMap((p) => [p.a, p.b]))];
const all = [...a, ...b];
const vecOf = new Map(pairs.flatMap((p, i) => [[p.a, all[i]] as const, [p.b, all[pairs.length + i]] as const]));
let closest = { d: 2, x: "", y: "" };
for (let i = 0; i < texts.length; i++) {
  for (let j = i + 1; j < texts.length; j++) {
    const d = cosDist(vecOf.get(texts[i])!, vecOf.get(texts[j])!);
    if (d < closest.d) closest = { d, x: texts[i], y: texts[j] };
  }
}
const threads2 = await loadEmbedder({ model, cacheDir, device: "cpu", threads: 2 });
const again = await threads2.embed(texts.slice(0, 50));
const single = await Promise.all(texts.slice(0, 50).map(async (t) => (await embedder.embed([t]))[0]));
await threads2.dispose();
const drift = Math.max(...again.map((v, i) => cosDist(v, single[i])));
console.log(JSON.stringify({ distinct_texts: texts.length, closest_two: closest, threads_2_vs_1_batched_vs_single_max_distance: drift }));

if (model === BUILTIN_EMBEDDING_MODEL_ID) {
  const ref: Reference = JSON.parse(readFileSync(join(here, "reference.json"), "utf8"));
  const tokenizer = await AutoTokenizer.from_pretrained(await ensureBuiltinEmbeddingModel(cacheDir), { local_files_only: true });
  const idMismatch = ref.texts.filter((t, i) => JSON.stringify(tokenizer.encode(t)) !== JSON.stringify(ref.ids[i])).length;
  const vectors = await embedder.embed(ref.texts.slice(0, ref.vectors.length));
  const maxDiff = Math.max(...vectors.flatMap((v, i) => v.map((x, j) => Math.abs(x - ref.vectors[i][j]))));
  console.log(JSON.stringify({ token_id_mismatches: `${idMismatch} of ${ref.texts.length}`, max_abs_diff_vs_torch: maxDiff }));
}
await embedder.dispose();
