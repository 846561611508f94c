// `npm run models:eval [-- --old=<model folder>]`: the built-in language model's figures for models/README.md.
// Held-out perplexity (per token, and bits per byte so models with other tokenizers compare), greedy and
// sampled completions, the share of generated words found in an English word list over 50 prompts, and the
// miner engine's tokens/s — for the trained model, its random-weight look-alike (the wrong-model cheat's
// model) and, with --old, a folder holding the previous built-in model (models/README.md says how to build it).
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { AutoTokenizer } from "@huggingface/transformers";
import words from "an-array-of-english-words" with { type: "json" };
import * as ort from "onnxruntime-node";
import { loadTransformersEngine, type TransformersEngine } from "../miner-agent/src/engine.ts";
import { BUILTIN_SEED, ensureBuiltinModel } from "../miner-agent/src/model/build.ts";
import { PROMPTS } from "./prompts.ts";

const ROOT = resolve(import.meta.dirname, "..");
const CACHE = join(ROOT, ".cache/models-eval");
const HELDOUT_CHARS = 20_000;
const WORD_TOKENS = 32;
const ENGLISH = new Set(words as string[]);
const GREEDY = { temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 };

/** Held-out text as the corpus writes it: one sentence per line; here joined into running text. */
async function heldout(): Promise<string> {
  const text = await readFile(join(ROOT, "models/build/heldout.txt"), "utf8");
  return text.split("\n").join(" ").slice(0, HELDOUT_CHARS);
}

/** Mean negative log-likelihood over non-overlapping context windows, straight on onnxruntime. */
async function perplexity(dir: string, text: string): Promise<{ perToken: number; bitsPerByte: number; tokens: number }> {
  const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
  const tokenizer = await AutoTokenizer.from_pretrained(dir, { local_files_only: true });
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  const session = await ort.InferenceSession.create(join(dir, "onnx/model.onnx"));
  const [L, H, D, V, T] = [cfg.n_layer, cfg.n_head, cfg.n_embd / cfg.n_head, cfg.vocab_size, Math.min(cfg.n_positions, 512)];
  const i64 = (a: number[]) => new ort.Tensor("int64", BigInt64Array.from(a, BigInt), [1, a.length]);
  let nll = 0;
  let n = 0;
  for (let s = 0; s + 1 < ids.length; s += T) {
    const w = ids.slice(s, s + T + 1);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64(w.slice(0, -1)),
      attention_mask: i64(w.slice(0, -1).map(() => 1)),
      position_ids: i64(w.slice(0, -1).map((_, i) => i)),
    };
    for (let l = 0; l < L; l++)
      for (const k of ["key", "value"]) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor("float32", new Float32Array(0), [1, H, 0, D]);
    const logits = (await session.run(feeds)).logits.data as Float32Array;
    for (let i = 0; i + 1 < w.length; i++) {
      const row = logits.subarray(i * V, (i + 1) * V);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      nll += Math.log(sum) + max - row[w[i + 1]];
      n++;
    }
  }
  await session.release();
  const bytes = Buffer.byteLength(text) * (n / Math.max(1, ids.length - 1));
  return { perToken: Math.exp(nll / n), bitsPerByte: nll / Math.LN2 / bytes, tokens: n };
}

async function complete(engine: TransformersEngine, prompt: string, maxTokens: number, sampled = false): Promise<string> {
  const params = sampled ? { ...GREEDY, temperature: 0.8, top_p: 0.95, seed: 7 } : GREEDY;
  const r = await engine.generate({ input: { prompt, prompt_type: 1 }, params: { ...params, max_tokens: maxTokens } });
  return r.text;
}

/** Share of generated words (letters only, lower-cased) found in the English word list. */
async function wordShare(engine: TransformersEngine): Promise<{ share: number; words: number }> {
  let found = 0;
  let total = 0;
  for (const p of PROMPTS) {
    for (const w of (await complete(engine, p, WORD_TOKENS)).toLowerCase().match(/[a-z]+/g) ?? []) {
      total++;
      if (ENGLISH.has(w)) found++;
    }
  }
  return { share: found / Math.max(1, total), words: total };
}

/** The bench's engine figure: median tokens/s of greedy 64-token runs (EOS cannot stop a run: a long max). */
async function tokensPerSecond(engine: TransformersEngine): Promise<number> {
  const tps: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    const r = await engine.generate({ input: { prompt: "The quick brown fox", prompt_type: 1 }, params: { ...GREEDY, max_tokens: 64 } });
    tps.push(r.usage.completion_tokens / ((performance.now() - t0) / 1000));
  }
  return tps.sort((a, b) => a - b)[3];
}

async function evaluate(name: string, dir: string, model: string, text: string): Promise<void> {
  const ppl = await perplexity(dir, text);
  const engine = await loadTransformersEngine({ model, device: "cpu", cacheDir: CACHE, threads: 1 });
  const ws = await wordShare(engine);
  const tps = await tokensPerSecond(engine);
  console.log(`\n## ${name} (${dir})`);
  console.log(`held-out perplexity ${ppl.perToken.toFixed(2)} per token, ${ppl.bitsPerByte.toFixed(3)} bits/byte (${ppl.tokens} tokens)`);
  console.log(
    `English words: ${(100 * ws.share).toFixed(1)}% of ${ws.words} words in ${PROMPTS.length} greedy ${WORD_TOKENS}-token completions`,
  );
  console.log(`engine tokens/s (1 thread, median of 7 × 64 tokens): ${tps.toFixed(1)}`);
  for (const p of PROMPTS.slice(0, 4)) {
    console.log(`  greedy  ${JSON.stringify(p)} → ${JSON.stringify(await complete(engine, p, 40))}`);
    console.log(`  sampled ${JSON.stringify(p)} → ${JSON.stringify(await complete(engine, p, 40, true))}`);
  }
  await engine.dispose();
}

const old = process.argv.find((a) => a.startsWith("--old="))?.slice(6);
const text = await heldout();
const trained = await ensureBuiltinModel(CACHE);
const random = await ensureBuiltinModel(CACHE, "edge/tiny-gpt2-random", undefined, { seed: BUILTIN_SEED + 1 });
console.log(`models: evaluation on ${HELDOUT_CHARS} characters of held-out text (models/build/heldout.txt)`);
await evaluate("trained (edge/tiny-gpt2)", trained, trained, text);
await evaluate("random weights, same shape and tokenizer", random, random, text);
if (old) await evaluate("previous built-in model (random weights, vocab 1024)", resolve(old), resolve(old), text);
