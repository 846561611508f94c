// The trained language model's committed data (models/README.md says how it is made): the BPE tokenizer
// (data/lm-bpe.json) and the quantized weights (data/lm-weights.bin: int8 matrices, fp16 vectors). Read from the package's own files, so
// no hub or network is needed; the miner-agent package ships src/model/data/ (its `files`).
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { Gpt2Config, Gpt2Layer, Gpt2Weights } from "./gpt2-graph.ts";
import type { TrainedBpe } from "./tokenizer.ts";

export const LM_BPE_FILE = "lm-bpe.json";
export const LM_WEIGHTS_FILE = "lm-weights.bin";
/** File magic: format name and version (bump with any layout change). */
const MAGIC = "EGPT2Q08";

/** A committed data file: beside this module in the repository, or `src/model/data` seen from the bundle's chunks. */
export function modelDataPath(file: string): string {
  const candidates = [new URL(`./data/${file}`, import.meta.url), new URL(`../../src/model/data/${file}`, import.meta.url)];
  for (const url of candidates) {
    const path = fileURLToPath(url);
    if (existsSync(path)) return path;
  }
  throw new Error(`model data file ${file} not found (looked in ${candidates.map((u) => fileURLToPath(u)).join(", ")})`);
}

export async function loadLmBpe(): Promise<TrainedBpe> {
  const raw = JSON.parse(await readFile(modelDataPath(LM_BPE_FILE), "utf8")) as TrainedBpe;
  if (!Array.isArray(raw.tokens) || !Array.isArray(raw.merges)) throw new Error(`${LM_BPE_FILE}: not a {tokens, merges} tokenizer`);
  return { tokens: raw.tokens, merges: raw.merges.map(([a, b]) => [a, b]) };
}

/** IEEE half → float, exactly (every half is representable as a float), with integer ops only. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

interface TensorEntry {
  name: string;
  shape: number[];
}

/**
 * Parses lm-weights.bin: MAGIC, a little-endian u32 header length, a JSON header {config, tensors: [{name, shape}]}
 * (padded with spaces to an even length), then each tensor in header order, row-major, in the graph's layout (linear
 * weights [in, out]): a matrix as one little-endian float32 scale per row and then int8 values (row i = scale[i] ×
 * q[i]), a vector as little-endian fp16.
 */
export function parseLmWeights(buf: Uint8Array): { config: Gpt2Config; weights: Gpt2Weights } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (new TextDecoder().decode(buf.subarray(0, 8)) !== MAGIC) throw new Error(`${LM_WEIGHTS_FILE}: bad magic`);
  const headerLen = dv.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(buf.subarray(12, 12 + headerLen))) as { config: Gpt2Config; tensors: TensorEntry[] };
  let off = 12 + headerLen;
  const tensors = new Map<string, Float32Array>();
  for (const t of header.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const rows = t.shape.length === 2 ? t.shape[0] : 0;
    const size = rows ? 4 * rows + n : 2 * n;
    if (off + size > buf.byteLength) throw new Error(`${LM_WEIGHTS_FILE}: truncated at ${t.name}`);
    const out = new Float32Array(n);
    if (rows) {
      const cols = n / rows;
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(off + 4 * Math.floor(i / cols), true) * dv.getInt8(off + 4 * rows + i);
    } else {
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(off + 2 * i, true));
    }
    tensors.set(t.name, out);
    off += size;
  }
  if (off !== buf.byteLength) throw new Error(`${LM_WEIGHTS_FILE}: ${buf.byteLength - off} trailing bytes`);
  const get = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${LM_WEIGHTS_FILE}: missing tensor ${name}`);
    return t;
  };
  const keys: (keyof Gpt2Layer)[] = [
    "ln1_g",
    "ln1_b",
    "attn_w",
    "attn_b",
    "proj_w",
    "proj_b",
    "ln2_g",
    "ln2_b",
    "fc_w",
    "fc_b",
    "out_w",
    "out_b",
  ];
  const layers = Array.from({ length: header.config.n_layer }, (_, l) => {
    const layer = {} as Gpt2Layer;
    for (const k of keys) layer[k] = get(`h.${l}.${k}`);
    return layer;
  });
  return { config: header.config, weights: { wte: get("wte"), wpe: get("wpe"), layers, lnf_g: get("lnf_g"), lnf_b: get("lnf_b") } };
}

export async function loadLmWeights(): Promise<{ config: Gpt2Config; weights: Gpt2Weights; bytes: Uint8Array }> {
  const bytes = new Uint8Array(await readFile(modelDataPath(LM_WEIGHTS_FILE)));
  return { ...parseLmWeights(bytes), bytes };
}
