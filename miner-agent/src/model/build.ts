// Writes the builtin model (a small GPT-2 with KV cache, its tokenizer and configs) as a local
// Hugging Face model folder that transformers.js loads like any other: no model hub needed.
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { endianness } from "node:os";
import { dirname, join, resolve } from "node:path";
import { CORPUS } from "./corpus.ts";
import { buildGpt2Graph, type Gpt2Config } from "./gpt2-graph.ts";
import { encodeModel } from "./onnx-proto.ts";
import { isPrintableToken, tokenizerConfigJson, tokenizerJson, trainBpe } from "./tokenizer.ts";
import { type InitScales, initGpt2Weights } from "./weights.ts";

export const BUILTIN_MODEL_ID = "edge/tiny-gpt2";

/** Bump whenever the builder's code changes its output (config/seed/scale changes are caught anyway). */
export const BUILDER_VERSION = 2;

// Sized so one decode step costs ~4–5 ms on 2 CPU cores: transformers.js' generate() loop adds a
// fixed ~0.1–0.3 ms of JS per token, which must stay well under 5% of the step (the engine vs
// bare-loop benchmark); at n_layer 6 the margin was thin. Still ~150–220 tokens/s on 2 cores.
export const BUILTIN_CONFIG: Readonly<Gpt2Config> = Object.freeze({
  vocab_size: 1024,
  n_positions: 512,
  n_embd: 512,
  n_layer: 8,
  n_head: 8,
  layer_norm_epsilon: 1e-5,
});
export const BUILTIN_SEED = 20240607;
const SEED = BUILTIN_SEED;
// Chosen by looking at greedy output: varied, mostly printable word pieces rather than one repeated token.
const SCALES: InitScales = { embd: 0.25, pos: 1.5, gain: 3, priorEmbd: 1, priorBias: 3, lnfGain: -1 };

/** Files that make a model folder complete (model file name is what transformers.js loads for fp32). */
export const MODEL_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];
const BUILD_INFO = "build-info.json";

export interface BuildProgress {
  status: "building";
  progress: number;
}

/** Everything the output depends on: a cached folder built from anything else is rebuilt. */
const fingerprint = (seed: number) => JSON.stringify({ builder_version: BUILDER_VERSION, config: BUILTIN_CONFIG, seed, scales: SCALES });

/** Builds a look-alike of the builtin model: same shapes and tokenizer, other weights (test-only cheats). */
export interface BuildVariant {
  /** Weight seed (default: the builtin model's). */
  seed?: number;
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
  const seed = variant.seed ?? SEED;
  return ensureBuiltFolder(cacheDir, id, MODEL_FILES, fingerprint(seed), (tmp) => writeModel(tmp, id, seed, onProgress));
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

async function writeModel(out: string, id: string, seed: number, onProgress?: (p: BuildProgress) => void): Promise<string> {
  if (endianness() !== "LE") throw new Error("model builder needs a little-endian host (ONNX raw_data is little-endian)");
  const report = (progress: number) => onProgress?.({ status: "building", progress });
  const cfg = BUILTIN_CONFIG;
  report(0);

  const bpe = trainBpe(CORPUS, cfg.vocab_size - 1); // last id is <|endoftext|>
  if (bpe.tokens.length !== cfg.vocab_size - 1) throw new Error(`corpus too small for ${cfg.vocab_size} tokens`);
  const eosId = bpe.tokens.length;
  report(20);

  // Prior: none for raw/control bytes and <|endoftext|>, more for whole words (" river") than fragments.
  const prior = [...bpe.tokens.map((t) => (!isPrintableToken(t) ? 0 : /^\u0120[a-zA-Z]+$/.test(t) ? 1.5 : 1)), 0];
  const weights = initGpt2Weights(cfg, seed, SCALES, prior);
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
