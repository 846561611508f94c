// Similarity consensus over redundant outputs that may differ in wording (sampled decoding, other hardware):
// validators embed every replica's text; the router compares the vectors itself, so a validator only ever
// supplies numbers it can be checked on (other validators embed the same texts with the same model).

export const DEFAULT_EMBEDDING_MODEL = "edge/tiny-embed";
/**
 * Calibrated on the builtin embedder and language model (models/embed/calibrate.ts, `npm run bench:cheats`):
 * replicas that share a seed answer identically (distance 0) while junk and wrong-model outputs lie ≥ 0.74 away.
 * Independent samples of the builtin language model are mostly unrelated text (p50 ~0.93), so no threshold tells
 * them from junk: README "Similarity consensus".
 */
export const DEFAULT_DISPERSION_THRESHOLD = 0.5;

/**
 * Bounds on a validator's vectors (wellFormed), so no distance can overflow, underflow or be NaN: components
 * within ±MAX_COMPONENT (16 × 4096 squares of 1e6 stay far below 1e308), a norm of at least MIN_NORM, at most
 * MAX_DIMENSION components (what the protocol carries).
 */
export const MAX_COMPONENT = 1e6;
export const MIN_NORM = 1e-6;
export const MAX_DIMENSION = 4096;

/** Cosine distance 1 − cos(a, b) of two vectors (not assumed normalised), within [0, 2]; 1 when either is zero. */
export function cosineDistance(a: readonly number[], b: readonly number[]): number {
  let dot = 0,
    na = 0,
    nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  if (na === 0 || nb === 0) return 1;
  // Norms multiplied after their roots: the product of two squared norms can underflow where each does not.
  const d = 1 - dot / (Math.sqrt(na) * Math.sqrt(nb));
  return Number.isFinite(d) ? Math.min(2, Math.max(0, d)) : 1;
}

export function distanceMatrix(vectors: readonly (readonly number[])[]): number[][] {
  return vectors.map((a) => vectors.map((b) => cosineDistance(a, b)));
}

/** Element-wise median of several validators' matrices: one lying validator among three changes nothing. */
export function medianMatrix(matrices: readonly number[][][]): number[][] {
  const n = matrices[0]?.length ?? 0;
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => {
      const xs = matrices.map((m) => m[i][j]).sort((a, b) => a - b);
      const mid = xs.length >> 1;
      return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
    }),
  );
}

/**
 * Whether a validator's answer has the shape asked for, checked before any distance: one vector per text, all of
 * one dimension (`dim`, when another validator already set it; 2 to MAX_DIMENSION), every component finite and
 * within ±MAX_COMPONENT, every norm at least MIN_NORM.
 */
export function wellFormed(vectors: readonly (readonly number[])[], texts: number, dim = vectors[0]?.length ?? 0): boolean {
  if (vectors.length !== texts || texts === 0 || dim < 2 || dim > MAX_DIMENSION) return false;
  return vectors.every(
    (v) =>
      v.length === dim &&
      v.every((x) => Number.isFinite(x) && Math.abs(x) <= MAX_COMPONENT) &&
      Math.sqrt(v.reduce((s, x) => s + x * x, 0)) >= MIN_NORM,
  );
}

export interface SimilarityJudgement {
  /** Index of the chosen (most central) output. */
  chosen: number;
  agreed: number[];
  outliers: number[];
  /** Each output's cosine distance to the chosen one. */
  distances: number[];
  /** Mean pairwise distance over all outputs: how spread the replicas are. */
  dispersion: number;
}

/**
 * The medoid (least total distance to the others) anchors the consensus: every output within `threshold` of it
 * agrees, the rest are outliers. `eligible` narrows which agreeing output may be returned (most central first),
 * e.g. outputs consistent with text already streamed.
 */
export function judgeSimilarity(d: readonly number[][], threshold: number, eligible?: (i: number) => boolean): SimilarityJudgement {
  const n = d.length;
  const sum = (i: number, over: readonly number[]) => over.reduce((s, j) => s + d[i][j], 0);
  const all = [...Array(n).keys()];
  const medoid = all.reduce((best, i) => (sum(i, all) < sum(best, all) ? i : best), 0);
  // The medoid agrees with itself whatever rounding makes of its own distance.
  const agreed = all.filter((i) => i === medoid || d[medoid][i] <= threshold);
  const outliers = all.filter((i) => i !== medoid && !(d[medoid][i] <= threshold));
  // The output returned is the most central of the agreeing ones (outliers no longer pull the centre).
  const central = [...agreed].sort((a, b) => sum(a, agreed) - sum(b, agreed) || a - b);
  const chosen = central.find((i) => eligible?.(i) ?? true) ?? central[0];
  let total = 0;
  let pairs = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      total += d[i][j];
      pairs++;
    }
  }
  return { chosen, agreed, outliers, distances: d[chosen].slice(), dispersion: pairs ? total / pairs : 0 };
}
