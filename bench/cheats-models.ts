// `node bench/cheats-models.ts [--scales=0.02,0.05,0.1] [--bits=4,8]`: how far the verify cheats' look-alike models
// (perturbed weights: BuildVariant.perturb; quantized: BuildVariant.quantize) are from the built-in model, so the
// cheat bench runs models that still write plausible text. Over held-out text (models/build/heldout.txt, the
// corpus's unseen lines; falls back to models/prompts.ts) each model's perplexity per token, and against the
// honest model at each position: top-1 (greedy) agreement and the total-variation distance of the T = 0.8
// distributions — the chance that one shared seeded draw picks another token — with what that gives per
// 48-token output. Straight on onnxruntime, one window of up to 512 tokens at a time.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { AutoTokenizer } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { type BuildVariant, ensureBuiltinModel } from "../miner-agent/src/model/build.ts";
import { PROMPTS } from "../models/prompts.ts";

const ROOT = resolve(import.meta.dirname, "..");
const CACHE = join(ROOT, ".cache/cheats-models");
const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const SCALES = (args.get("scales") ?? "0.02,0.05,0.1,0.2").split(",").map(Number);
const BITS = (args.get("bits") ?? "4,8").split(",").map(Number);
const CHARS = Number(args.get("chars") ?? 20_000);
const T = 0.8;

async function text(): Promise<string> {
  const file = join(ROOT, "models/build/heldout.txt");
  const raw = existsSync(file) ? await readFile(file, "utf8") : PROMPTS.join("\n");
  return raw.split("\n").join(" ").slice(0, CHARS);
}

/** Logits of every position, one block per window of n_positions tokens ([positions × V] each). */
async function logitsOf(dir: string, ids: number[]): Promise<Float32Array[]> {
  const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
  const session = await ort.InferenceSession.create(join(dir, "onnx/model.onnx"));
  const [L, H, D, W] = [cfg.n_layer, cfg.n_head, cfg.n_embd / cfg.n_head, cfg.n_positions];
  const i64 = (a: number[]) => new ort.Tensor("int64", BigInt64Array.from(a, BigInt), [1, a.length]);
  const out: Float32Array[] = [];
  for (let s = 0; s + 1 < ids.length; s += W) {
    const w = ids.slice(s, s + W);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64(w),
      attention_mask: i64(w.map(() => 1)),
      position_ids: i64(w.map((_, i) => i)),
    };
    for (let l = 0; l < L; l++)
      for (const k of ["key", "value"]) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor("float32", new Float32Array(0), [1, H, 0, D]);
    out.push((await session.run(feeds)).logits.data as Float32Array);
  }
  await session.release();
  return out;
}

function softmax(row: Float32Array, t: number): Float64Array {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  const p = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += p[i] = Math.exp((row[i] - max) / t);
  for (let i = 0; i < row.length; i++) p[i] /= sum;
  return p;
}

const argmax = (row: Float32Array) => row.reduce((b, x, i) => (x > row[b] ? i : b), 0);

async function compare(name: string, variant: BuildVariant, ids: number[], honest: Float32Array[], V: number, W: number): Promise<void> {
  const dir = await ensureBuiltinModel(CACHE, `edge/${name}`, undefined, variant);
  const mine = await logitsOf(dir, ids);
  let nll = 0;
  let n = 0;
  let top1 = 0;
  let tv = 0;
  for (const [w, block] of mine.entries()) {
    const base = w * W; // window w starts at token w·W
    const rows = block.length / V;
    for (let i = 0; i < rows && base + i + 1 < ids.length; i++) {
      const row = block.subarray(i * V, (i + 1) * V);
      const ref = honest[w].subarray(i * V, (i + 1) * V);
      const p = softmax(row, 1);
      nll -= Math.log(p[ids[base + i + 1]]);
      if (argmax(row) === argmax(ref)) top1++;
      const a = softmax(row, T);
      const b = softmax(ref, T);
      let d = 0;
      for (let j = 0; j < V; j++) d += Math.abs(a[j] - b[j]);
      tv += d / 2;
      n++;
    }
  }
  const flip = tv / n;
  console.log(
    `  ${name.padEnd(22)} ppl/token ${Math.exp(nll / n)
      .toFixed(1)
      .padStart(8)}   greedy top-1 agreement ${((100 * top1) / n).toFixed(1)}%   ` +
      `T ${T} draw differs ${(100 * flip).toFixed(2)}% per token, ≥ 1 of 48 tokens ${(100 * (1 - (1 - flip) ** 48)).toFixed(1)}%`,
  );
}

async function main(): Promise<void> {
  const honestDir = await ensureBuiltinModel(CACHE, "edge/honest");
  const tokenizer = await AutoTokenizer.from_pretrained(honestDir, { local_files_only: true });
  const ids = tokenizer.encode(await text(), { add_special_tokens: false });
  const { vocab_size: V, n_positions: W } = JSON.parse(await readFile(join(honestDir, "config.json"), "utf8"));
  const honest = await logitsOf(honestDir, ids);
  console.log(`look-alike models vs the built-in model over ${ids.length} held-out tokens`);
  await compare("honest", {}, ids, honest, V, W);
  for (const scale of SCALES) await compare(`perturb-${scale}`, { perturb: { scale, seed: 1 } }, ids, honest, V, W);
  for (const bits of BITS) await compare(`int${bits}`, { quantize: { bits } }, ids, honest, V, W);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
