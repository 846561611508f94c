import { parseRubricOutput } from "./rubric.ts";
import type { Judgement, WorkResult } from "./work.ts";

// Verdict work (validate, factcheck): how much material a rubric prompt carries, how a replica's answer is
// read, and the verdict fields of the response.

/** UTF-8 bytes of material (claim, result, context, sources…) one rubric prompt carries in all. */
export function materialLimit(env: Env): number {
  return Number(env.RUBRIC_MAX_INPUT_BYTES) || 240;
}

/** Reads a rubric answer; an answer outside the grammar makes the replica fail with `invalid_output`. */
export function rubricJudge<V extends string>(labels: readonly V[]) {
  return (text: string): Judgement => {
    const parsed = parseRubricOutput(text, labels);
    if (!parsed) {
      return {
        key: null,
        score: null,
        fields: { output: text },
        error: { code: "invalid_output", message: "the answer is not a rubric verdict", details: { text: text.slice(0, 500) } },
      };
    }
    return {
      key: parsed.verdict,
      score: parsed.score,
      fields: { verdict: parsed.verdict, score: parsed.score, confidence: parsed.confidence, output: text },
    };
  };
}

/**
 * The verdict fields of a response: the winning label, the aggregated score, and a confidence that is the
 * agreeing replicas' mean self-reported confidence times the share of replicas that agreed.
 */
export function verdictFields(work: WorkResult) {
  const { agg, judged } = work;
  if (agg.key == null) return { verdict: null, score: null, confidence: null };
  const conf = agg.agreed.map((i) => judged[i].fields.confidence as number).filter((x) => typeof x === "number");
  const selfConfidence = conf.length ? conf.reduce((a, b) => a + b, 0) / conf.length : 0;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    verdict: agg.key,
    score: agg.score == null ? null : round(agg.score),
    confidence: round(selfConfidence * Math.min(1, agg.agreement)),
  };
}
