// Decoding policy applied to each step's logits: OpenAI-style presence/frequency penalties and,
// for temperature > 0, seeded sampling. transformers.js samples from a process-global RNG and has
// no top-p, so sampling happens here with a per-request RNG: the chosen token is left as the only
// finite logit and transformers.js' greedy argmax picks it. Replicas with the same seed, prompt
// and logits therefore sample identically, and concurrent requests never share RNG state.
import { LogitsProcessor, random, type Tensor } from "@huggingface/transformers";
import type { GenerationParams } from "../../../shared/generation.ts";

type Params = Pick<GenerationParams, "temperature" | "top_p" | "top_k" | "presence_penalty" | "frequency_penalty" | "seed">;

// Without top_k, tokens this far (in logit units after temperature) below the best are dropped before
// sorting: their probability is < e^-40 each, and it keeps large vocabularies cheap to sample.
const NEGLIGIBLE = 40;

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
    const { presence_penalty: pp, frequency_penalty: fp } = this.p;
    if (pp !== 0 || fp !== 0) {
      for (const [t, n] of this.counts) if (t < data.length) data[t] -= pp + fp * n;
    }
    if (this.rng) {
      const pick = this.sample(data);
      data.fill(-Infinity);
      data[pick] = 0;
    }
    return logits;
  }

  /** Temperature → top-k → top-p → one draw from the seeded RNG. Ties order by token id. */
  private sample(logits: Float32Array): number {
    const { temperature, top_k, top_p } = this.p;
    let max = -Infinity;
    for (const x of logits) if (x > max) max = x;
    const floor = top_k > 0 ? -Infinity : max - NEGLIGIBLE * temperature;
    let cand: number[] = [];
    for (let i = 0; i < logits.length; i++) if (logits[i] >= floor && logits[i] > -Infinity) cand.push(i);
    cand.sort((a, b) => logits[b] - logits[a] || a - b);
    if (top_k > 0 && cand.length > top_k) cand = cand.slice(0, top_k);

    const probs = cand.map((i) => Math.exp((logits[i] - max) / temperature));
    let total = 0;
    for (const p of probs) total += p;
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
    let r = this.rng!.random() * mass;
    for (let j = 0; j < keep; j++) {
      r -= probs[j];
      if (r < 0) return cand[j];
    }
    return cand[keep - 1];
  }
}
