import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { asText, rubricParams, VALIDATE_VERDICTS, type ValidateMaterial, validatePrompt } from "../lib/rubric.ts";
import type { Target } from "../lib/submit.ts";
import { materialLimit, rubricJudge, verdictFields } from "../lib/verdicts.ts";
import { consensusView, respond, runWork, submitRequest } from "../lib/work.ts";
import { type Consensus, SINGLE, ValidateV1, ValidateV2, ValidateV3 } from "../lib/work-schemas.ts";
import { resolvePool, resolveSingle, spread } from "../lib/work-sessions.ts";

// POST /api/v1|v2|v3/validate: validation miners score a candidate result (v1) or a claim (v2/v3) with a
// rubric prompt and answer `VERDICT / SCORE / CONFIDENCE` under constrained decoding, so any model gives a
// well-formed verdict. v3 aggregates the verdicts of `consensus.replicas` tasks across the validate pool.

export const validate = new Hono<AppEnv>();

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

validate.post("/v1/validate", jsonBody(ValidateV1), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "validate", b.session_id);
  const material: ValidateMaterial = {
    request: b.task_request_input,
    result: b.task_result_output,
    mode: b.evaluation_mode,
    context:
      [b.task_type && `task type ${b.task_type}`, b.task_domain && `domain ${b.task_domain}`].filter(Boolean).join(", ") || undefined,
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

validate.post("/v2/validate", jsonBody(ValidateV2), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "validate", b.session_id);
  return run(c, "v2", v2Material(b), [target], SINGLE, b);
});

validate.post("/v3/validate", jsonBody(ValidateV3), async (c) => {
  const b = c.req.valid("json");
  const pool = resolvePool(c.env, "validate", b.consensus.session_pool ?? (b.session_id ? [b.session_id] : undefined));
  return run(c, "v3", v2Material(b), spread(pool, b.consensus.replicas), b.consensus, b);
});
