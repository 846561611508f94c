import { cosineDistance } from "../similarity.ts";

// Consensus over the vectors of an embedding job. Honest miners run the same deterministic model on the same
// texts, so their vectors agree to float noise: the built-in edge/tiny-embed (trained, models/embed) moves a vector
// by < 2e-6 in distance across onnxruntime thread counts and batched or single calls, while the closest two
// different texts of its 1,174-text evaluation set (one dropped word: "He re-read her letters to him" / "He
// re-read letters to him") are 0.035 apart. The tolerance leaves over three orders of magnitude above that noise
// (another CPU ISA or a GPU adds more) and still sits below any other text's vector.

/** Cosine distance from the medoid within which a replica agrees, on every text of the job. */
export const EMBEDDING_TOLERANCE = 0.01;

/** Two replicas' distance: the largest over the job's texts (one faked vector is enough to disagree); 1 if shapes differ. */
export function replicaDistance(a: readonly (readonly number[])[], b: readonly (readonly number[])[]): number {
  if (a.length !== b.length) return 1;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i].length === b[i].length ? cosineDistance(a[i], b[i]) : 1;
    if (d > worst) worst = d;
  }
  return worst;
}

export interface EmbeddingJudgement {
  /** Index of the medoid answer: the one most others agree with (then the smallest total distance, then the first). */
  medoid: number;
  agreed: number[];
  outliers: number[];
  /** Each answer's distance to the medoid. */
  distances: number[];
}

/** Judges the answers (each one vector per text): the medoid, and who is within `tolerance` of it. */
export function judgeEmbeddings(answers: readonly (readonly (readonly number[])[])[], tolerance = EMBEDDING_TOLERANCE): EmbeddingJudgement {
  const d = answers.map((a) => answers.map((b) => replicaDistance(a, b)));
  let medoid = 0;
  let best = { near: -1, sum: Number.POSITIVE_INFINITY };
  d.forEach((row, i) => {
    const near = row.filter((x) => x <= tolerance).length;
    const sum = row.reduce((s, x) => s + x, 0);
    if (near > best.near || (near === best.near && sum < best.sum)) {
      best = { near, sum };
      medoid = i;
    }
  });
  const distances = d[medoid] ?? [];
  const agreed = distances.flatMap((x, i) => (x <= tolerance ? [i] : []));
  const outliers = distances.flatMap((x, i) => (x > tolerance ? [i] : []));
  return { medoid, agreed, outliers, distances };
}

/**
 * Prompt tokens an embedding job is charged (and reserves up front): the miners report no token counts, so the
 * router estimates them from the texts, ⌈UTF-8 bytes / 4⌉ per text (at least 1). Deterministic, known before the
 * job runs, and never above the bytes a byte-level tokenizer could make tokens of.
 */
export function embeddingTokens(texts: readonly string[]): number {
  const encoder = new TextEncoder();
  return texts.reduce((sum, t) => sum + Math.max(1, Math.ceil(encoder.encode(t).length / 4)), 0);
}
