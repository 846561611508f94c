// Writes the builtin embedding model `edge/tiny-embed` as a local Hugging Face folder that transformers.js runs
// as a `feature-extraction` pipeline (mean pooling, L2-normalised), used by validators to compare redundant
// sampled outputs and by embedding jobs. No hub is reachable, so the ONNX is built here, deterministically, from
// weights trained by models/embed/train.py and committed in models/embed/: a lower-cased WordPiece vocabulary
// (vocab.txt) and one 4-bit vector per token (a rank-240 projection) with a float32 scale (embeddings.bin, checked against
// manifest.json's sha256). The model is those token vectors, mean-pooled: trained contrastively on WordNet
// paraphrases, so distances follow meaning rather than shared tokens (models/embed/README.md has the figures).
// Where a hub is reachable, any sentence-embedding model (e.g. Xenova/all-MiniLM-L6-v2) can be used instead.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { endianness } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureBuiltFolder } from "./build.ts";
import { buildEncoderGraph, type EncoderConfig } from "./encoder-graph.ts";
import { encodeModel } from "./onnx-proto.ts";

export const BUILTIN_EMBEDDING_MODEL_ID = "edge/tiny-embed";
/** Bump whenever this builder's code changes its output (new weights are caught by their hash anyway). */
const EMBEDDER_VERSION = 2;
const MAX_LENGTH = 512;
const PAD = "[PAD]";
const UNK = "[UNK]";

/** What models/embed/manifest.json promises about embeddings.bin. */
export interface EmbeddingManifest {
  /** Bits per stored value: 4 (two per byte, even column in the low nibble) or 8. */
  bits: 4 | 8;
  vocab_size: number;
  hidden_size: number;
  sha256: string;
}

// The weights folder in the repository (this file is miner-agent/src/model/) and in the published package
// (scripts/build-packages.ts copies them to miner-agent/dist/models/embed/; this code lands in dist/ or dist/chunks/).
const CANDIDATES = ["../../../models/embed/", "../models/embed/", "./models/embed/"];

/** The folder holding the committed embedder weights. */
export function embedWeightsDir(): string {
  for (const rel of CANDIDATES) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(join(dir, "manifest.json"))) return dir;
  }
  throw new Error("embedding model weights (models/embed/manifest.json) not found beside the miner agent");
}

const FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];

export async function ensureBuiltinEmbeddingModel(cacheDir: string, id: string = BUILTIN_EMBEDDING_MODEL_ID): Promise<string> {
  const dir = embedWeightsDir();
  const [manifestText, vocabText] = await Promise.all([
    readFile(join(dir, "manifest.json"), "utf8"),
    readFile(join(dir, "vocab.txt"), "utf8"),
  ]);
  const fingerprint = JSON.stringify({
    embedder_version: EMBEDDER_VERSION,
    manifest: createHash("sha256").update(manifestText).digest("hex"),
    vocab: createHash("sha256").update(vocabText).digest("hex"),
  });
  return ensureBuiltFolder(cacheDir, id, FILES, fingerprint, (tmp) => writeEmbedder(tmp, id, dir, JSON.parse(manifestText), vocabText));
}

/** The committed rows as float32 [vocab_size, hidden_size]: row i = scale[i] × q[i], q signed 4- or 8-bit integers. */
export async function loadTokenVectors(dir: string, m: EmbeddingManifest): Promise<Float32Array> {
  if (endianness() !== "LE") throw new Error("embedding builder needs a little-endian host (weights and ONNX are little-endian)");
  const blob = await readFile(join(dir, "embeddings.bin"));
  if (createHash("sha256").update(blob).digest("hex") !== m.sha256)
    throw new Error("models/embed/embeddings.bin does not match its manifest");
  const V = m.vocab_size;
  const E = m.hidden_size;
  if ((m.bits !== 4 && m.bits !== 8) || E % 2 !== 0 || blob.length !== V * 4 + (V * E * m.bits) / 8)
    throw new Error("models/embed/embeddings.bin has the wrong size for its manifest");
  const scale = new Float32Array(blob.buffer.slice(blob.byteOffset, blob.byteOffset + V * 4));
  const packed = blob.subarray(V * 4);
  // A 4-bit value v (two's complement in a nibble) is (v ^ 8) - 8.
  const q = (i: number) => (m.bits === 8 ? (packed[i] << 24) >> 24 : (((i & 1 ? packed[i >> 1] >> 4 : packed[i >> 1]) & 0xf) ^ 8) - 8);
  const word = new Float32Array(V * E);
  for (let i = 0; i < V * E; i++) word[i] = scale[Math.floor(i / E)] * q(i);
  return word;
}

async function writeEmbedder(out: string, id: string, dir: string, m: EmbeddingManifest, vocabText: string): Promise<string> {
  const vocab = vocabText.split("\n").filter((t) => t !== "");
  if (vocab.length !== m.vocab_size || vocab[0] !== PAD || vocab[1] !== UNK)
    throw new Error("models/embed/vocab.txt does not match its manifest");
  const cfg: EncoderConfig = {
    vocab_size: m.vocab_size,
    max_position_embeddings: MAX_LENGTH,
    hidden_size: m.hidden_size,
    num_hidden_layers: 0,
    num_attention_heads: 1,
    intermediate_size: 0,
    layer_norm_eps: 1e-5,
  };
  const onnx = encodeModel(buildEncoderGraph(cfg, { word: await loadTokenVectors(dir, m), layers: [] }));
  const config = {
    _name_or_path: id,
    architectures: ["BertModel"],
    // transformers.js picks the encoder-only code path by model_type; the graph's own layout is in encoder-graph.ts.
    model_type: "bert",
    vocab_size: cfg.vocab_size,
    hidden_size: cfg.hidden_size,
    num_hidden_layers: 0,
    num_attention_heads: 1,
    max_position_embeddings: MAX_LENGTH,
    pad_token_id: 0,
    "transformers.js_config": { dtype: "fp32", use_external_data_format: false },
  };
  const special = (content: string, id: number) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  // Lower-case, split into words and single punctuation marks, then greedy longest-match WordPiece: exactly
  // what models/embed/data.py's Tokenizer does in training. No [CLS]/[SEP]: the mean is over the text alone.
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(PAD, 0), special(UNK, 1)],
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: UNK,
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
    },
  };
  const tokenizerConfig = {
    tokenizer_class: "BertTokenizer",
    do_lower_case: true,
    pad_token: PAD,
    unk_token: UNK,
    padding_side: "right",
    model_max_length: MAX_LENGTH,
    clean_up_tokenization_spaces: true,
  };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await mkdir(join(out, "onnx"), { recursive: true });
  await Promise.all([
    writeFile(join(out, "config.json"), json(config)),
    writeFile(join(out, "tokenizer.json"), json(tokenizer)),
    writeFile(join(out, "tokenizer_config.json"), json(tokenizerConfig)),
    writeFile(join(out, "onnx/model.onnx"), onnx),
  ]);
  return createHash("sha256").update(onnx).digest("hex");
}
