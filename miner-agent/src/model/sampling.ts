// Decoding policy applied to each step's logits: OpenAI-style presence/frequency penalties and,
// for temperature > 0, seeded sampling. transformers.js samples from a process-global RNG and has
// no top-p, so sampling happens here with a per-request RNG: the chosen token is left as the only
// finite logit and transformers.js' greedy argmax picks it. Replicas with the same seed, prompt
// and logits therefore sample identically, and concurrent requests never share RNG state.
// The draws are one uniform per step from transformers.js' `random.Random(seed)`: MT19937 seeded and drawn
// exactly as CPython's `random.Random(seed).random()` (integer arithmetic only, so the same stream on every
// platform), independent of the logits, so a verifier replays each step from logits alone (verifier.ts).
import { LogitsProcessor, random, type Tensor } from "@huggingface/transformers";
import type { GenerationParams } from "../../../shared/generation.ts";

type Params = Pick<GenerationParams, "temperature" | "top_p" | "top_k" | "presence_penalty" | "frequency_penalty" | "seed">;

// Without top_k, tokens this far (in logit units after temperature) below the best are dropped before
// sorting: their probability is < e^-40 each, and it keeps large vocabularies cheap to sample.
export const NEGLIGIBLE = 40;

export class DecodingPolicy extends LogitsProcessor {
  private readonly p: Params;
  private readonly counts = new Map<number, number>();
  private seen: number;
  private readonly rng: InstanceType<typeof random.Random> | null;

  constructor(p: Params, promptLength: number) {
    super();
    this.p = p;
    this.seen = promptLength; // penalties count completion tokens only
    this.rng = p.temperature > 0 ? new random.Random(p.seed) : null;
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    if (inputIds.length !== 1) throw new Error("batch size 1 only");
    const ids = inputIds[0];
    for (; this.seen < ids.length; this.seen++) {
      const t = Number(ids[this.seen]);
      this.counts.set(t, (this.counts.get(t) ?? 0) + 1);
    }
    const data = logits.data as Float32Array; // [1, vocab], modified in place
    applyPenalties(data, this.counts, this.p);
    if (this.rng) {
      const pick = this.sample(data);
      data.fill(-Infinity);
      data[pick] = 0;
    }
    return logits;
  }

  /** Temperature → top-k → top-p → one draw from the seeded RNG. Ties order by token id. */
  private sample(logits: Float32Array): number {
    return drawFrom(candidates(logits, this.p), this.rng!.random());
  }
}

/** What one sampled step draws from: candidates by falling logit (ties by id), their weights, how many are kept. */
export interface Candidates {
  cand: number[];
  /** exp((logit − max) / temperature) of each candidate. */
  probs: number[];
  /** The prefix top-k and top-p keep (at least one). */
  keep: number;
  /** Sum of the kept weights: the draw is u × mass. */
  mass: number;
  /** Sum of every candidate's weight (top-p is a share of it). */
  total: number;
}

/**
 * The candidates of one sampled step (penalties already applied to `logits`). A pure function of the logits and
 * the parameters, so a verifier (verifier.ts) recomputes it from a teacher-forced pass.
 */
export function candidates(logits: Float32Array, p: Pick<Params, "temperature" | "top_k" | "top_p">): Candidates {
  const { temperature, top_k, top_p } = p;
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  const floor = top_k > 0 ? -Infinity : max - NEGLIGIBLE * temperature;
  let cand: number[] = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] >= floor && logits[i] > -Infinity) cand.push(i);
  cand.sort((a, b) => logits[b] - logits[a] || a - b);
  if (top_k > 0 && cand.length > top_k) cand = cand.slice(0, top_k);

  const probs = cand.map((i) => Math.exp((logits[i] - max) / temperature));
  let total = 0;
  for (const q of probs) total += q;
  // Smallest prefix whose mass reaches top_p (at least one token).
  let keep = probs.length;
  if (top_p < 1) {
    let acc = 0;
    for (let j = 0; j < probs.length; j++) {
      acc += probs[j] / total;
      if (acc >= top_p) {
        keep = j + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let j = 0; j < keep; j++) mass += probs[j];
  return { cand, probs, keep, mass, total };
}

/** The token the uniform draw `u` ∈ [0, 1) selects among the kept candidates. */
export function drawFrom(c: Candidates, u: number): number {
  let r = u * c.mass;
  for (let j = 0; j < c.keep; j++) {
    r -= c.probs[j];
    if (r < 0) return c.cand[j];
  }
  return c.cand[c.keep - 1];
}

/** Subtracts the OpenAI-style presence and frequency penalties of the completion tokens counted so far. */
export function applyPenalties(
  data: Float32Array,
  counts: ReadonlyMap<number, number>,
  p: Pick<Params, "presence_penalty" | "frequency_penalty">,
): void {
  const { presence_penalty: pp, frequency_penalty: fp } = p;
  if (pp === 0 && fp === 0) return;
  for (const [t, n] of counts) if (t < data.length) data[t] -= pp + fp * n;
}
