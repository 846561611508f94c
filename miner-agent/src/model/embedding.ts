// Writes the builtin embedding model `edge/tiny-embed`: a small transformer encoder that transformers.js
// runs as a `feature-extraction` pipeline (mean pooling, L2-normalised), used by miners acting as
// validators to compare redundant sampled outputs. No hub is reachable, so it is built like the language
// model, deterministically, from the same embedded corpus and the same tokenizer.
//
// Without training data the weights are constructed, not learned: each token's embedding is a random
// (nearly orthogonal) unit direction, and the encoder blocks add a small contextual mix on top of that
// residual stream. The sentence vector is therefore close to a bag of tokens: cosine similarity measures lexical overlap, which is what
// separates two samples of one model from junk or another model's output. Where a hub is reachable, any
// real sentence-embedding model (e.g. Xenova/all-MiniLM-L6-v2) can be used instead (--embedding-model).
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BUILTIN_CONFIG, ensureBuiltFolder } from "./build.ts";
import { CORPUS } from "./corpus.ts";
import { buildEncoderGraph, type EncoderConfig, type EncoderLayer } from "./encoder-graph.ts";
import { encodeModel } from "./onnx-proto.ts";
import { EOS_TOKEN, tokenizerConfigJson, tokenizerJson, trainBpe } from "./tokenizer.ts";
import { rng } from "./weights.ts";

export const BUILTIN_EMBEDDING_MODEL_ID = "edge/tiny-embed";
const EMBEDDER_VERSION = 1;
const SEED = 20241111;

export const EMBEDDING_CONFIG: Readonly<EncoderConfig> = Object.freeze({
  vocab_size: BUILTIN_CONFIG.vocab_size, // the language model's tokenizer, so every output token is known
  max_position_embeddings: BUILTIN_CONFIG.n_positions,
  hidden_size: 512,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 1024,
  layer_norm_eps: 1e-5,
});
// Block output scale relative to a token's own embedding: context nudges a vector, it does not replace it.
const SCALES = { position: 0.002, attn: 1, mix: 0.004 };

const FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];
const fingerprint = () => JSON.stringify({ embedder_version: EMBEDDER_VERSION, config: EMBEDDING_CONFIG, seed: SEED, scales: SCALES });

export async function ensureBuiltinEmbeddingModel(cacheDir: string, id: string = BUILTIN_EMBEDDING_MODEL_ID): Promise<string> {
  return ensureBuiltFolder(cacheDir, id, FILES, fingerprint(), (tmp) => writeEmbedder(tmp, id));
}

async function writeEmbedder(out: string, id: string): Promise<string> {
  const cfg = EMBEDDING_CONFIG;
  const E = cfg.hidden_size;
  const bpe = trainBpe(CORPUS, cfg.vocab_size - 1);
  const eosId = bpe.tokens.length;
  const rand = rng(SEED);
  const SQRT3 = 1.7320508075688772;
  const uniform = (n: number, std: number): Float32Array => {
    const a = std * SQRT3;
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = (rand() * 2 - 1) * a;
    return v;
  };
  const fill = (n: number, v: number) => new Float32Array(n).fill(v);

  // Token rows: random, nearly orthogonal unit directions. (An IDF-like length falling with corpus frequency
  // was tried: it pulled two samples of one model further apart, not junk.) <|endoftext|> has length 0:
  // padding or an end marker means nothing.
  const word = uniform(cfg.vocab_size * E, 1);
  for (let t = 0; t < cfg.vocab_size; t++) {
    let n2 = 0;
    for (let i = 0; i < E; i++) n2 += word[t * E + i] * word[t * E + i];
    const f = t === eosId ? 0 : 1 / Math.sqrt(n2);
    for (let i = 0; i < E; i++) word[t * E + i] *= f;
  }
  const position = uniform(cfg.max_position_embeddings * E, SCALES.position);
  const layers: EncoderLayer[] = [];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    layers.push({
      ln1_g: fill(E, 1),
      ln1_b: fill(E, 0),
      qkv_w: uniform(E * 3 * E, SCALES.attn / Math.sqrt(E)),
      qkv_b: fill(3 * E, 0),
      proj_w: uniform(E * E, SCALES.mix / Math.sqrt(E)),
      proj_b: fill(E, 0),
      ln2_g: fill(E, 1),
      ln2_b: fill(E, 0),
      fc_w: uniform(E * cfg.intermediate_size, 1 / Math.sqrt(E)),
      fc_b: fill(cfg.intermediate_size, 0),
      out_w: uniform(cfg.intermediate_size * E, SCALES.mix / Math.sqrt(cfg.intermediate_size)),
      out_b: fill(E, 0),
    });
  }
  const onnx = encodeModel(buildEncoderGraph(cfg, { word, position, layers }));

  const config = {
    _name_or_path: id,
    architectures: ["BertModel"],
    // transformers.js picks the encoder-only code path by model_type; the graph's own layout is above.
    model_type: "bert",
    vocab_size: cfg.vocab_size,
    hidden_size: E,
    num_hidden_layers: cfg.num_hidden_layers,
    num_attention_heads: cfg.num_attention_heads,
    intermediate_size: cfg.intermediate_size,
    max_position_embeddings: cfg.max_position_embeddings,
    layer_norm_eps: cfg.layer_norm_eps,
    pad_token_id: eosId,
    "transformers.js_config": { dtype: "fp32", use_external_data_format: false },
  };
  const tokenizerConfig = { ...tokenizerConfigJson(eosId, cfg.max_position_embeddings), pad_token: EOS_TOKEN, padding_side: "right" };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await mkdir(join(out, "onnx"), { recursive: true });
  await Promise.all([
    writeFile(join(out, "config.json"), json(config)),
    writeFile(join(out, "tokenizer.json"), json(tokenizerJson(bpe))),
    writeFile(join(out, "tokenizer_config.json"), json(tokenizerConfig)),
    writeFile(join(out, "onnx/model.onnx"), onnx),
  ]);
  return createHash("sha256").update(onnx).digest("hex");
}
