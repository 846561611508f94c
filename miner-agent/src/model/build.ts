// Writes the builtin model (a small GPT-2 with KV cache, its tokenizer and configs) as a local
// Hugging Face model folder that transformers.js loads like any other: no model hub needed. The weights and
// tokenizer are the trained ones committed in data/ (models/README.md: corpus, training, figures); the ONNX
// graph is written here from them, deterministically, so every miner holds a byte-identical model.
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { endianness } from "node:os";
import { dirname, join, resolve } from "node:path";
import { buildGpt2Graph, type Gpt2Config, type Gpt2Weights } from "./gpt2-graph.ts";
import { LM_BPE_FILE, loadLmBpe, loadLmWeights, modelDataPath } from "./lm-data.ts";
import { encodeModel } from "./onnx-proto.ts";
import { isPrintableToken, tokenizerConfigJson, tokenizerJson } from "./tokenizer.ts";
import { type InitScales, initGpt2Weights, perturbWeights, quantizeWeights } from "./weights.ts";

export const BUILTIN_MODEL_ID = "edge/tiny-gpt2";

/** Bump whenever the builder's code changes its output (config, variant and data changes are caught anyway). */
export const BUILDER_VERSION = 3;

// The trained model's shape (checked against the committed weights' header at build time). Small enough to
// train in ~30 minutes on 2 shared CPU cores (models/train.py); one decode step costs well under a millisecond.
export const BUILTIN_CONFIG: Readonly<Gpt2Config> = Object.freeze({
  vocab_size: 4096,
  n_positions: 512,
  n_embd: 128,
  n_layer: 4,
  n_head: 4,
  layer_norm_epsilon: 1e-5,
});
/** Seed base for random-weight look-alikes (BuildVariant.seed): the wrong-model cheat's second model. */
export const BUILTIN_SEED = 20240607;
// Random look-alikes only. Chosen by looking at greedy output: varied, mostly printable word pieces.
const SCALES: InitScales = { embd: 0.25, pos: 1.5, gain: 3, priorEmbd: 1, priorBias: 3, lnfGain: -1 };

/** Files that make a model folder complete (model file name is what transformers.js loads for fp32). */
export const MODEL_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];
const BUILD_INFO = "build-info.json";

export interface BuildProgress {
  status: "building";
  progress: number;
}

/**
 * A look-alike of the builtin model (same shapes and tokenizer, other weights) for test-only cheats and tests
 * that need a second, different model. Absent fields: the trained model itself.
 */
export interface BuildVariant {
  /** Random weights from this seed instead of the trained ones (the wrong-model cheat). */
  seed?: number;
  /** The trained weights plus seeded noise: each tensor gets Gaussian-like noise of std `scale` × that tensor's
   * own std (a slightly perturbed model: same behaviour mostly, different logits). Ignored when `seed` is set. */
  perturb?: { scale: number; seed: number };
  /** The trained weights with every matrix rounded to `bits`-bit integers per row (a quantized copy; after any
   * perturbation). Ignored when `seed` is set. */
  quantize?: { bits: number };
}

/** sha256 of the committed data the model is built from: a changed file rebuilds every cached copy. */
async function dataDigest(): Promise<string> {
  const h = createHash("sha256");
  for (const file of [LM_BPE_FILE, "lm-weights.bin"]) h.update(await readFile(modelDataPath(file)));
  return h.digest("hex");
}

/** Everything the output depends on: a cached folder built from anything else is rebuilt. */
async function fingerprint(variant: BuildVariant): Promise<string> {
  const v = variant.seed !== undefined ? { seed: variant.seed, scales: SCALES } : { perturb: variant.perturb, quantize: variant.quantize };
  return JSON.stringify({ builder_version: BUILDER_VERSION, config: BUILTIN_CONFIG, data: await dataDigest(), variant: v });
}

async function isComplete(dir: string, files: readonly string[], fp: string): Promise<boolean> {
  if (!files.every((f) => existsSync(join(dir, f)))) return false;
  try {
    const info = JSON.parse(await readFile(join(dir, BUILD_INFO), "utf8"));
    return info.fingerprint === fp;
  } catch {
    return false;
  }
}

/**
 * Ensures `<cacheDir>/<id>/` holds the builtin model and returns that folder. Builds into a temp
 * folder and renames it into place, so a crash or a concurrent builder never leaves a half-written
 * model behind; the output is byte-identical on every machine.
 */
export async function ensureBuiltinModel(
  cacheDir: string,
  id: string = BUILTIN_MODEL_ID,
  onProgress?: (p: BuildProgress) => void,
  variant: BuildVariant = {},
): Promise<string> {
  return ensureBuiltFolder(cacheDir, id, MODEL_FILES, await fingerprint(variant), (tmp) => writeModel(tmp, id, variant, onProgress));
}

/**
 * The build-once-then-rename discipline shared by every builtin model: `write` fills a temp folder and
 * returns the sha256 of its ONNX file; `build-info.json` (written last) marks the folder complete.
 */
export async function ensureBuiltFolder(
  cacheDir: string,
  id: string,
  files: readonly string[],
  fp: string,
  write: (tmp: string) => Promise<string>,
): Promise<string> {
  if (id.split("/").some((part) => part === "" || part === "." || part === "..")) throw new Error(`invalid model id: ${id}`);
  const dir = resolve(cacheDir, id);
  if (await isComplete(dir, files, fp)) return dir;

  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const sha256 = await write(tmp);
    await writeFile(join(tmp, BUILD_INFO), JSON.stringify({ id, fingerprint: fp, model_onnx_sha256: sha256 }, null, 2) + "\n");
    await mkdir(dirname(dir), { recursive: true });
    if (existsSync(dir)) {
      if (await isComplete(dir, files, fp)) return dir; // another process won the race
      await rm(dir, { recursive: true, force: true }); // stale or damaged copy
    }
    try {
      await rename(tmp, dir);
    } catch (err) {
      if (!(await isComplete(dir, files, fp))) throw err; // lost a race to a complete copy: fine
    }
    return dir;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The weights a variant asks for (see BuildVariant), checked against BUILTIN_CONFIG. */
async function variantWeights(variant: BuildVariant, tokens: string[]): Promise<Gpt2Weights> {
  const cfg = BUILTIN_CONFIG;
  if (variant.seed !== undefined) {
    // Prior: none for raw/control bytes and <|endoftext|>, more for whole words (" river") than fragments.
    const prior = [...tokens.map((t) => (!isPrintableToken(t) ? 0 : /^\u0120[a-zA-Z]+$/.test(t) ? 1.5 : 1)), 0];
    return initGpt2Weights(cfg, variant.seed, SCALES, prior);
  }
  const { config, weights } = await loadLmWeights();
  if (JSON.stringify(config) !== JSON.stringify(cfg))
    throw new Error(`committed weights are for ${JSON.stringify(config)}, not BUILTIN_CONFIG`);
  const perturbed = variant.perturb ? perturbWeights(weights, variant.perturb.seed, variant.perturb.scale) : weights;
  return variant.quantize ? quantizeWeights(perturbed, cfg, variant.quantize.bits) : perturbed;
}

async function writeModel(out: string, id: string, variant: BuildVariant, onProgress?: (p: BuildProgress) => void): Promise<string> {
  if (endianness() !== "LE") throw new Error("model builder needs a little-endian host (ONNX raw_data is little-endian)");
  const report = (progress: number) => onProgress?.({ status: "building", progress });
  const cfg = BUILTIN_CONFIG;
  report(0);

  const bpe = await loadLmBpe();
  if (bpe.tokens.length !== cfg.vocab_size - 1) throw new Error(`tokenizer has ${bpe.tokens.length + 1} tokens, not ${cfg.vocab_size}`);
  const eosId = bpe.tokens.length; // last id is <|endoftext|>
  report(20);
  const weights = await variantWeights(variant, bpe.tokens);
  report(50);
  const onnx = encodeModel(buildGpt2Graph(cfg, weights));
  report(80);

  const config = {
    _name_or_path: id,
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    activation_function: "gelu_new",
    vocab_size: cfg.vocab_size,
    n_positions: cfg.n_positions,
    n_ctx: cfg.n_positions,
    n_embd: cfg.n_embd,
    n_layer: cfg.n_layer,
    n_head: cfg.n_head,
    n_inner: null,
    layer_norm_epsilon: cfg.layer_norm_epsilon,
    bos_token_id: eosId,
    eos_token_id: eosId,
    tie_word_embeddings: true,
    use_cache: true,
    "transformers.js_config": { dtype: "fp32", use_external_data_format: false },
  };
  const generationConfig = { _from_model_config: true, bos_token_id: eosId, eos_token_id: eosId };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";

  await mkdir(join(out, "onnx"), { recursive: true });
  await Promise.all([
    writeFile(join(out, "config.json"), json(config)),
    writeFile(join(out, "generation_config.json"), json(generationConfig)),
    writeFile(join(out, "tokenizer.json"), json(tokenizerJson(bpe))),
    writeFile(join(out, "tokenizer_config.json"), json(tokenizerConfigJson(eosId, cfg.n_positions))),
    writeFile(join(out, "onnx/model.onnx"), onnx),
  ]);
  report(100);
  return createHash("sha256").update(onnx).digest("hex");
}
