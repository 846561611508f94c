import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { AutoTokenizer } from "@huggingface/transformers";
import words from "an-array-of-english-words" with { type: "json" };
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTransformersEngine } from "../../miner-agent/src/engine.ts";
import { BUILTIN_CONFIG, BUILTIN_MODEL_ID, BUILTIN_SEED, ensureBuiltinModel } from "../../miner-agent/src/model/build.ts";
import { halfToFloat, loadLmWeights, parseLmWeights } from "../../miner-agent/src/model/lm-data.ts";

// The trained built-in language model, built from the committed weights and tokenizer (no stubs): its ONNX
// logits equal the training framework's (models/reference-logits.json, written by models/export.py), its
// greedy text is English, and the test-only look-alikes (random weights, perturbed weights) really differ.

const REFERENCE = JSON.parse(await readFile(resolve(import.meta.dirname, "../../models/reference-logits.json"), "utf8")) as {
  columns: number[];
  prompts: { prompt: string; ids: number[]; argmax: number; logits: number[] }[];
};
const ENGLISH = new Set(words as string[]);
const GREEDY = { temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 };

let cacheDir: string;
let trained: string;

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "lm-model-test-"));
  trained = await ensureBuiltinModel(cacheDir);
}, 120_000);

afterAll(async () => {
  await rm(cacheDir, { recursive: true, force: true });
});

/** Last-position logits of a full forward pass over `ids`. */
async function lastLogits(dir: string, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(join(dir, "onnx/model.onnx"));
  const { n_layer: L, n_head: H, n_embd: E, vocab_size: V } = BUILTIN_CONFIG;
  const i64 = (a: number[]) => new ort.Tensor("int64", BigInt64Array.from(a, BigInt), [1, a.length]);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids),
    attention_mask: i64(ids.map(() => 1)),
    position_ids: i64(ids.map((_, i) => i)),
  };
  for (let l = 0; l < L; l++)
    for (const k of ["key", "value"]) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor("float32", new Float32Array(0), [1, H, 0, E / H]);
  const out = (await s.run(feeds)).logits.data as Float32Array;
  await s.release();
  return out.slice((ids.length - 1) * V);
}

const argmax = (a: Float32Array) => a.reduce((best, x, i) => (x > a[best] ? i : best), 0);
const sha256 = async (dir: string) => JSON.parse(await readFile(join(dir, "build-info.json"), "utf8")).model_onnx_sha256 as string;

async function greedyText(model: string, prompt: string): Promise<string> {
  const engine = await loadTransformersEngine({ model, device: "cpu", cacheDir, threads: 1 });
  try {
    return (await engine.generate({ input: { prompt, prompt_type: 1 }, params: { ...GREEDY, max_tokens: 40 } })).text;
  } finally {
    await engine.dispose();
  }
}

const englishShare = (text: string) => {
  const ws = text.toLowerCase().match(/[a-z]+/g) ?? [];
  return ws.filter((w) => ENGLISH.has(w)).length / Math.max(1, ws.length);
};

describe("trained built-in language model", () => {
  it("is the committed model: its config matches BUILTIN_CONFIG and the tokenizer is the trained one", async () => {
    const config = JSON.parse(await readFile(join(trained, "config.json"), "utf8"));
    expect(config).toMatchObject({ ...BUILTIN_CONFIG, model_type: "gpt2", eos_token_id: BUILTIN_CONFIG.vocab_size - 1 });
    const { config: committed } = await loadLmWeights();
    expect(committed).toEqual(BUILTIN_CONFIG);
    // transformers.js tokenizes as the Python BPE the model was trained with.
    const tokenizer = await AutoTokenizer.from_pretrained(trained, { local_files_only: true });
    for (const r of REFERENCE.prompts) expect(tokenizer.encode(r.prompt, { add_special_tokens: false })).toEqual(r.ids);
  });

  it("computes the training framework's logits (ONNX vs torch within 1e-3)", async () => {
    expect(REFERENCE.prompts.length).toBeGreaterThanOrEqual(3);
    for (const r of REFERENCE.prompts) {
      const logits = await lastLogits(trained, r.ids);
      expect(argmax(logits)).toBe(r.argmax);
      const worst = Math.max(...REFERENCE.columns.map((c, i) => Math.abs(logits[c] - r.logits[i])));
      expect(worst).toBeLessThan(1e-3);
    }
  });

  it("writes English: greedy words are in the word list, unlike the random-weight look-alike's", async () => {
    const text = await greedyText(BUILTIN_MODEL_ID, "The river");
    expect(await greedyText(BUILTIN_MODEL_ID, "The river")).toBe(text); // greedy is deterministic
    expect(englishShare(text)).toBeGreaterThanOrEqual(0.85);
    const random = await ensureBuiltinModel(cacheDir, "edge/test-random", undefined, { seed: BUILTIN_SEED + 1 });
    expect(englishShare(await greedyText(random, "The river"))).toBeLessThan(englishShare(text));
  }, 120_000);

  it("builds perturbed look-alikes deterministically: scale 0 is the model itself, noise changes logits a little", async () => {
    const zero = await ensureBuiltinModel(cacheDir, "edge/test-perturb-0", undefined, { perturb: { scale: 0, seed: 1 } });
    expect(await sha256(zero)).toBe(await sha256(trained));
    const a = await ensureBuiltinModel(cacheDir, "edge/test-perturb-a", undefined, { perturb: { scale: 0.05, seed: 1 } });
    const b = await ensureBuiltinModel(cacheDir, "edge/test-perturb-b", undefined, { perturb: { scale: 0.05, seed: 1 } });
    const c = await ensureBuiltinModel(cacheDir, "edge/test-perturb-c", undefined, { perturb: { scale: 0.05, seed: 2 } });
    expect(await sha256(b)).toBe(await sha256(a));
    expect(await sha256(c)).not.toBe(await sha256(a));
    const ids = REFERENCE.prompts[0].ids;
    const [base, noisy] = [await lastLogits(trained, ids), await lastLogits(a, ids)];
    const diff = Math.max(...base.map((x, i) => Math.abs(x - noisy[i])));
    expect(diff).toBeGreaterThan(1e-3);
    expect(diff).toBeLessThan(10);
  }, 120_000);
});

describe("committed weight file", () => {
  it("decodes IEEE halves exactly", () => {
    expect([0x3c00, 0xc000, 0x0001, 0x7bff, 0x0000, 0x8000, 0x3555].map(halfToFloat)).toEqual([
      1,
      -2,
      2 ** -24,
      65504,
      0,
      -0,
      0.333251953125,
    ]);
  });

  it("rejects a damaged file instead of building a wrong model", async () => {
    const { bytes } = await loadLmWeights();
    expect(() => parseLmWeights(bytes.subarray(0, bytes.length - 2))).toThrow(/truncated/);
    expect(() => parseLmWeights(new Uint8Array([...bytes, 0, 0]))).toThrow(/trailing/);
    const bad = bytes.slice();
    bad[0] = 0x58;
    expect(() => parseLmWeights(bad)).toThrow(/magic/);
  });
});
