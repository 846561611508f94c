// Deterministic pseudo-random GPT-2 weights. Only integer ops and correctly rounded IEEE float ops
// (+ − × ÷ sqrt) are used, no Math.exp/log/sin whose last bit may vary between platforms, so every
// machine produces bit-identical tensors and thus byte-identical models.
import type { Gpt2Config, Gpt2Layer, Gpt2Weights } from "./gpt2-graph.ts";

/** mulberry32: tiny, fast, seedable 32-bit PRNG. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296; // [0, 1)
  };
}

export interface InitScales {
  /** Std of token / position embeddings. */
  embd: number;
  pos: number;
  /** Linear layers use std = gain / sqrt(fan_in). */
  gain: number;
  /** Strength of the shared "readable token" direction (embedding part, final LayerNorm bias part). */
  priorEmbd: number;
  priorBias: number;
  /** Final LayerNorm gain. Negative makes the tied head score the current token's own embedding low,
   * so the random model does not lock onto repeating one token. */
  lnfGain: number;
}

/** `prior[v]` scales how strongly token v is pulled towards being predicted (0 = no pull). */
export function initGpt2Weights(cfg: Gpt2Config, seed: number, scales: InitScales, prior: number[]): Gpt2Weights {
  const rand = rng(seed);
  const SQRT3 = 1.7320508075688772; // uniform(-a, a) has std a / sqrt(3)
  const uniform = (n: number, std: number): Float32Array => {
    const out = new Float32Array(n);
    const a = std * SQRT3;
    for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * a;
    return out;
  };
  const fill = (n: number, v: number): Float32Array => new Float32Array(n).fill(v);
  const E = cfg.n_embd;
  const linear = (fanIn: number, fanOut: number): Float32Array => uniform(fanIn * fanOut, scales.gain / Math.sqrt(fanIn));

  // A fixed direction shared by all readable tokens: the final LayerNorm bias points along it, which
  // acts as a learned-looking prior towards printable text instead of stray bytes.
  const dir = uniform(E, 1);
  let norm = 0;
  for (const x of dir) norm += x * x;
  norm = Math.sqrt(norm);
  for (let i = 0; i < E; i++) dir[i] /= norm;

  const wte = uniform(cfg.vocab_size * E, scales.embd);
  for (let v = 0; v < cfg.vocab_size; v++) {
    // Equal row norms: otherwise a few long random rows win the argmax from almost any state.
    let n2 = 0;
    for (let i = 0; i < E; i++) n2 += wte[v * E + i] * wte[v * E + i];
    const f = (scales.embd * Math.sqrt(E)) / Math.sqrt(n2);
    for (let i = 0; i < E; i++) wte[v * E + i] *= f;
    const k = scales.priorEmbd * (prior[v] ?? 0);
    if (k !== 0) for (let i = 0; i < E; i++) wte[v * E + i] += k * dir[i];
  }
  const wpe = uniform(cfg.n_positions * E, scales.pos);

  const layers: Gpt2Layer[] = [];
  for (let l = 0; l < cfg.n_layer; l++) {
    layers.push({
      ln1_g: fill(E, 1),
      ln1_b: fill(E, 0),
      attn_w: linear(E, 3 * E),
      attn_b: uniform(3 * E, 0.02),
      proj_w: linear(E, E),
      proj_b: uniform(E, 0.02),
      ln2_g: fill(E, 1),
      ln2_b: fill(E, 0),
      fc_w: linear(E, 4 * E),
      fc_b: uniform(4 * E, 0.02),
      out_w: linear(4 * E, E),
      out_b: uniform(E, 0.02),
    });
  }
  const lnf_b = new Float32Array(E);
  for (let i = 0; i < E; i++) lnf_b[i] = scales.priorBias * dir[i];
  return { wte, wpe, layers, lnf_g: fill(E, scales.lnfGain), lnf_b };
}

/** Approximately standard-normal noise (Irwin–Hall: four uniforms), from + − × only, so it is bit-identical everywhere. */
function gaussianish(rand: () => number): number {
  const SQRT3 = 1.7320508075688772; // the sum of 4 uniforms has variance 1/3
  return (rand() + rand() + rand() + rand() - 2) * SQRT3;
}

function perturbTensor(t: Float32Array, rand: () => number, scale: number): Float32Array {
  let mean = 0;
  for (const x of t) mean += x;
  mean /= t.length;
  let v = 0;
  for (const x of t) v += (x - mean) * (x - mean);
  // A constant tensor (a fresh LayerNorm gain) gets noise relative to its magnitude instead of its zero spread.
  const std = Math.sqrt(v / t.length) || Math.abs(mean);
  const out = new Float32Array(t.length);
  for (let i = 0; i < t.length; i++) out[i] = t[i] + scale * std * gaussianish(rand);
  return out;
}

/** The same model with seeded noise of `scale` × each tensor's own std added to every tensor (tests' perturbed model). */
export function perturbWeights(w: Gpt2Weights, seed: number, scale: number): Gpt2Weights {
  if (scale === 0) return w; // bit-identical (adding 0 would turn -0 into +0)
  const rand = rng(seed);
  const p = (t: Float32Array) => perturbTensor(t, rand, scale);
  const layers = w.layers.map((l) => {
    const out = {} as Gpt2Layer;
    for (const k of Object.keys(l) as (keyof Gpt2Layer)[]) out[k] = p(l[k]);
    return out;
  });
  return { wte: p(w.wte), wpe: p(w.wpe), layers, lnf_g: p(w.lnf_g), lnf_b: p(w.lnf_b) };
}

/** Each row of `t` (`cols` wide) rounded to signed `bits`-bit integers times one scale per row (max |x| / (2^(bits−1) − 1)). */
function quantizeRows(t: Float32Array, cols: number, bits: number): Float32Array {
  const levels = 2 ** (bits - 1) - 1;
  const out = new Float32Array(t.length);
  for (let r = 0; r < t.length; r += cols) {
    let max = 0;
    for (let i = r; i < r + cols; i++) max = Math.max(max, Math.abs(t[i]));
    const scale = max / levels;
    for (let i = r; i < r + cols; i++) out[i] = scale === 0 ? 0 : Math.max(-levels - 1, Math.min(levels, Math.round(t[i] / scale))) * scale;
  }
  return out;
}

/**
 * The same model as a `bits`-bit per-row quantized copy would run it (tests' quantized model): every matrix
 * (embeddings and linear layers) rounded row by row; LayerNorm parameters and biases kept, as quantizers do.
 */
export function quantizeWeights(w: Gpt2Weights, cfg: Gpt2Config, bits: number): Gpt2Weights {
  const E = cfg.n_embd;
  const layers = w.layers.map((l) => ({
    ...l,
    attn_w: quantizeRows(l.attn_w, 3 * E, bits),
    proj_w: quantizeRows(l.proj_w, E, bits),
    fc_w: quantizeRows(l.fc_w, 4 * E, bits),
    out_w: quantizeRows(l.out_w, E, bits),
  }));
  return { ...w, wte: quantizeRows(w.wte, E, bits), wpe: quantizeRows(w.wpe, E, bits), layers };
}
