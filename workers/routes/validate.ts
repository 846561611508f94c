import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { VALIDATE_VERDICTS, asText, parseRubricOutput, rubricParams, validatePrompt, type ValidateMaterial } from "../lib/rubric.ts";
import { jsonBody } from "../lib/validate.ts";
import { consensusView, respond, runWork, submitRequest, type Judgement } from "../lib/work.ts";
import { SINGLE, ValidateV1, ValidateV2, ValidateV3, type Consensus } from "../lib/work-schemas.ts";
import { resolvePool, resolveSingle, spread, type Target } from "../lib/work-sessions.ts";
import { apiKeyAuth } from "../middleware/auth.ts";

// POST /api/v1|v2|v3/validate: validation miners score a candidate result (v1) or a claim (v2/v3) with a
// rubric prompt and answer `VERDICT / SCORE / CONFIDENCE` under constrained decoding, so any model gives a
// well-formed verdict. v3 aggregates the verdicts of `consensus.replicas` tasks across the validate pool.

export const validate = new Hono<AppEnv>();

/** UTF-8 bytes of material (claim, result, context, sources…) one rubric prompt carries in all. */
export function materialLimit(env: Env): number {
  return Number(env.RUBRIC_MAX_INPUT_BYTES) || 200;
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
    return { key: parsed.verdict, score: parsed.score, fields: { verdict: parsed.verdict, score: parsed.score, confidence: parsed.confidence, output: text } };
  };
}

/**
 * The verdict fields of a response: the winning label, the aggregated score, and a confidence that is the
 * agreeing replicas' mean self-reported confidence times the share of replicas that agreed.
 */
export function verdictFields(work: Awaited<ReturnType<typeof runWork>>) {
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

async function run(
  c: Parameters<typeof runWork>[0],
  version: "v1" | "v2" | "v3",
  material: ValidateMaterial,
  targets: Target[],
  consensus: Consensus,
  opts: { timeout?: number; client_reference?: string; metadata?: unknown },
) {
  const prompt = validatePrompt(material, materialLimit(c.env));
  const params = rubricParams(VALIDATE_VERDICTS);

  const req = submitRequest(c.get("owner"), prompt, params, opts);
  const work = await runWork(c, { family: "validate", targets, req, consensus, judge: rubricJudge(VALIDATE_VERDICTS) });
  const pool = [...new Set(targets.map((t) => t.session_id))];
  return respond(
    c,
    work,
    { version, ...verdictFields(work), ...(opts.metadata !== undefined ? { metadata: opts.metadata } : {}) },
    consensusView(work.agg, consensus, pool),
  );
}

validate.post("/v1/validate", apiKeyAuth, jsonBody(ValidateV1), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "validate", b.session_id);
  const material: ValidateMaterial = {
    request: b.task_request_input,
    result: b.task_result_output,
    mode: b.evaluation_mode,
    context: [b.task_type && `task type ${b.task_type}`, b.task_domain && `domain ${b.task_domain}`].filter(Boolean).join(", ") || undefined,
  };
  return run(c, "v1", material, [target], SINGLE, b);
});

function v2Material(b: ValidateV2): ValidateMaterial {
  return {
    request: asText(b.claim),
    policy: b.policy === undefined ? undefined : asText(b.policy),
    context: b.context === undefined ? undefined : asText(b.context),
    actor: b.actor === undefined ? undefined : asText(b.actor),
  };
}

validate.post("/v2/validate", apiKeyAuth, jsonBody(ValidateV2), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "validate", b.session_id);
  return run(c, "v2", v2Material(b), [target], SINGLE, b);
});

validate.post("/v3/validate", apiKeyAuth, jsonBody(ValidateV3), async (c) => {
  const b = c.req.valid("json");
  const pool = resolvePool(c.env, "validate", b.consensus.session_pool ?? (b.session_id ? [b.session_id] : undefined));
  return run(c, "v3", v2Material(b), spread(pool, b.consensus.replicas), b.consensus, b);
});
