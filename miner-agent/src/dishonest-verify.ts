import { randomInt } from "node:crypto";
import type { GenerateResult } from "./engine-types.ts";
import type { BuildVariant } from "./model/build.ts";

// TEST ONLY. The cheats verified sampling is measured against (dishonest.ts wires them):
//   perturbed-weights  runs a perturbed copy of the declared model: the built-in model's trained weights plus seeded
//                      noise of PERTURB_SCALE × each tensor's std (MINER_TEST_PERTURB_SCALE), built by the
//                      model builder (BuildVariant.perturb) and loaded under the declared id. At that scale it still
//                      writes the same kind of text: held-out perplexity 128.9 vs 126.9, the same greedy token at
//                      84 % of positions (bench/cheats-models.ts).
//   quantized          the built-in model with every matrix rounded to QUANTIZE_BITS-bit integers per row
//                      (MINER_TEST_QUANTIZE_BITS; BuildVariant.quantize): a cheaper copy a miner might run instead.
//   junk (verified)    random byte-level token ids with its random words, so validators get ids to check.
// The look-alikes are loaded as wrong-model's is (disguised: no rescore), so a cheater never validates others.

/** Default noise of the perturbed copy, in units of each weight tensor's std. */
export const PERTURB_SCALE = 0.1;
/** Default width of the quantized copy's integers. */
export const QUANTIZE_BITS = 4;

/** The look-alike model a verify cheat runs instead of the built-in one, and the folder id it is built under. */
export function lookAlikeOf(mode: string): { id: string; variant: BuildVariant } | null {
  if (mode === "perturbed-weights") {
    const scale = Number(process.env.MINER_TEST_PERTURB_SCALE) || PERTURB_SCALE;
    return { id: `edge/tiny-gpt2-perturbed-${scale}`, variant: { perturb: { scale, seed: 1 } } };
  }
  if (mode === "quantized") {
    const bits = Number(process.env.MINER_TEST_QUANTIZE_BITS) || QUANTIZE_BITS;
    return { id: `edge/tiny-gpt2-int${bits}`, variant: { quantize: { bits } } };
  }
  return null;
}

/** junk on a verified task: one random byte-level token id per word (ids every byte-level BPE vocabulary has). */
export function junkTokenIds(result: GenerateResult, verified: boolean): GenerateResult {
  if (!verified) return result;
  return { ...result, token_ids: Array.from({ length: result.usage.completion_tokens }, () => randomInt(256)) };
}
