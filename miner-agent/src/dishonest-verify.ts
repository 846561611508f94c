import { randomInt } from "node:crypto";
import { LogitsProcessor, random, type Tensor } from "@huggingface/transformers";
import type { Engine, GenerateResult } from "./engine-types.ts";

// TEST ONLY. The cheats verified sampling is measured against (dishonest.ts wires them):
//   perturbed-weights  runs the declared model with its logits perturbed, as a quantized or perturbed-weights copy
//                      would produce: seeded Gaussian noise of σ PERTURB_SIGMA (MINER_TEST_PERTURB_SIGMA) on every
//                      logit, a deterministic function of the context (its seed is the position and the last
//                      token). An emulation at the logits: the builder has no weight perturbation (BuildVariant
//                      has only a seed), and a logit-level change is what a verifier sees of one either way.
//   junk (verified)    random byte-level token ids with its random words, so validators get ids to check.

/** Default σ of the logit noise (logit units; the built-in model's top logits are a few units apart). */
export const PERTURB_SIGMA = 0.5;

class LogitNoise extends LogitsProcessor {
  readonly #sigma: number;
  constructor(sigma: number) {
    super();
    this.#sigma = sigma;
  }
  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    const ids = inputIds[0];
    const rng = new random.Random(ids.length * 1_000_003 + Number(ids[ids.length - 1] ?? 0n));
    const data = logits.data as Float32Array;
    for (let i = 0; i < data.length; i++) data[i] += this.#sigma * rng.gauss(0, 1);
    return logits;
  }
}

/** perturbed-weights: the loaded engine, its logits perturbed before the decoding policy on every task. */
export function perturbEngine(engine: Engine, sigma = Number(process.env.MINER_TEST_PERTURB_SIGMA) || PERTURB_SIGMA): Engine {
  const seam = (engine as { testProcessors?: LogitsProcessor[] }).testProcessors;
  if (!seam) throw new Error("--test-dishonest perturbed-weights needs the transformers.js engine");
  seam.push(new LogitNoise(sigma));
  return engine;
}

/** junk on a verified task: one random byte-level token id per word (ids every byte-level BPE vocabulary has). */
export function junkTokenIds(result: GenerateResult, verified: boolean): GenerateResult {
  if (!verified) return result;
  return { ...result, token_ids: Array.from({ length: result.usage.completion_tokens }, () => randomInt(256)) };
}
