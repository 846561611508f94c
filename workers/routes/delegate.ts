import { Hono } from "hono";
import { resultHash } from "../../shared/signing.ts";
import type { AppEnv } from "../env.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { asText } from "../lib/rubric.ts";
import type { Target } from "../lib/submit.ts";
import { consensusView, type Judgement, respond, runWork, submitRequest } from "../lib/work.ts";
import { type Consensus, DelegateV1, DelegateV2, DelegateV3, SINGLE } from "../lib/work-schemas.ts";
import { resolvePool, resolveSingle, spread } from "../lib/work-sessions.ts";

// POST /api/v1|v2|v3/delegate: a task handed to the network as a prompt built from the request's fields.
// v1 and v2 run it once in one session (whose own redundancy and exact-hash consensus apply); v3 fans it out
// to `consensus.replicas` tasks across the session pool and aggregates the outputs (see lib/aggregation.ts):
// replicas agree when their outputs are byte-identical (same hash); median_of_means reads a number out of
// each output.

export const delegate = new Hono<AppEnv>();

function v1Prompt(b: DelegateV1): string {
  const lines = [];
  if (b.task_type) lines.push(`Task type: ${b.task_type}`);
  if (b.task_domain) lines.push(`Domain: ${b.task_domain}`);
  lines.push(`Task: ${b.task_request_input}`);
  if (b.task_result_output) lines.push(`Previous result: ${b.task_result_output}`);
  if (b.evaluation_mode) lines.push(`Evaluation mode: ${b.evaluation_mode}`);
  return `${lines.join("\n")}\nResult:`;
}

function v2Prompt(b: DelegateV2): string {
  const lines = [`Objective: ${b.objective}`];
  if (b.input !== undefined) lines.push(`Input: ${asText(b.input)}`);
  if (b.policy !== undefined) lines.push(`Policy: ${asText(b.policy)}`);
  if (b.tools?.length) lines.push(`Tools: ${asText(b.tools)}`);
  if (b.workflow !== undefined) lines.push(`Workflow: ${asText(b.workflow)}`);
  return `${lines.join("\n")}\nResult:`;
}

/** The first number in an output (median_of_means on delegate work), else null. */
export function numberIn(text: string): number | null {
  const m = /-?\d+(?:\.\d+)?(?:e[+-]?\d+)?/i.exec(text);
  return m ? Number(m[0]) : null;
}

const judge = (text: string): Judgement => ({
  key: resultHash(text),
  score: numberIn(text),
  fields: { output: text },
});

async function run(
  c: Parameters<typeof runWork>[0],
  version: "v1" | "v2" | "v3",
  prompt: string,
  gen: { max_tokens: number; temperature: number; top_p: number; top_k: number; seed?: number },
  targets: Target[],
  consensus: Consensus,
  opts: { timeout?: number; client_reference?: string; metadata?: unknown },
) {
  const req = submitRequest(c.get("owner"), prompt, { ...gen, presence_penalty: 0, frequency_penalty: 0, stop: [] }, opts);
  const work = await runWork(c, { family: "delegate", targets, req, consensus, judge });
  const { agg, runs } = work;
  const winner = agg.key == null ? null : work.judged.findIndex((j, i) => j.key === agg.key && agg.agreed.includes(i));
  const chosen = winner == null || winner < 0 ? null : runs[winner].task;
  const pool = [...new Set(targets.map((t) => t.session_id))];
  return respond(
    c,
    work,
    {
      version,
      output: chosen?.result?.text ?? null,
      ...(agg.strategy === "median_of_means" ? { value: agg.score } : {}),
      finish_reason: chosen?.result?.finish_reason ?? null,
      usage: chosen?.result?.usage ?? null,
      task_id: chosen?.task_id ?? null,
      session_id: chosen?.session_id ?? null,
      ...(opts.metadata !== undefined ? { metadata: opts.metadata } : {}),
    },
    consensusView(agg, consensus, pool),
  );
}

delegate.post("/v1/delegate", jsonBody(DelegateV1), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "delegate", b.session_id);
  return run(c, "v1", v1Prompt(b), b, [target], SINGLE, b);
});

function execution(b: DelegateV2) {
  const e = b.execution;
  return {
    gen: { max_tokens: e.max_tokens ?? 128, temperature: e.temperature ?? 0, top_p: e.top_p ?? 1, top_k: e.top_k ?? 0, seed: e.seed },
    opts: { timeout: e.timeout ?? b.timeout, client_reference: b.client_reference, metadata: b.metadata },
  };
}

delegate.post("/v2/delegate", jsonBody(DelegateV2), async (c) => {
  const b = c.req.valid("json");
  const target = resolveSingle(c.env, "delegate", b.session_id);
  const { gen, opts } = execution(b);
  return run(c, "v2", v2Prompt(b), gen, [target], SINGLE, opts);
});

delegate.post("/v3/delegate", jsonBody(DelegateV3), async (c) => {
  const b = c.req.valid("json");
  const pool = resolvePool(c.env, "delegate", b.consensus.session_pool ?? (b.session_id ? [b.session_id] : undefined));
  const { gen, opts } = execution(b);
  return run(c, "v3", v2Prompt(b), gen, spread(pool, b.consensus.replicas), b.consensus, opts);
});
