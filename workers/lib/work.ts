import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { ERROR_STATUS, type Failure } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { type Aggregate, aggregate, type Vote } from "./aggregation.ts";
import { withReceipt, workFacts } from "./receipts.ts";
import type { Target } from "./submit.ts";
import type { Consensus } from "./work-schemas.ts";
import { type ReplicaRun, replicaWeights, resultMiners, runReplicas, WORK_TIMEOUT_S } from "./work-sessions.ts";

// The shared tail of delegate, validate and factcheck: run the replicas, judge each answer, aggregate, and
// answer with the final result, consensus metadata and per-replica evidence.

/** What a route reads out of one replica's committed text. */
export interface Judgement {
  /** What must match for replicas to agree (output hash, verdict label); null: no usable answer. */
  key: string | null;
  score: number | null;
  /** Route-specific fields shown in the replica's evidence (output, verdict, confidence…). */
  fields: Record<string, unknown>;
  /** Why an answer that came back is unusable (e.g. no parsable verdict). */
  error?: Failure;
}

export interface WorkSpec {
  family: "delegate" | "validate" | "factcheck";
  /** One per replica. */
  targets: Target[];
  req: SubmitRequest;
  consensus: Consensus;
  judge: (text: string) => Judgement;
}

export interface ReplicaEvidence {
  index: number;
  session_id: string;
  task_id: string | null;
  status: "ok" | "failed";
  /** Miners whose result the session accepted (its own exact-hash consensus), else those assigned. */
  miners: string[];
  hash: string | null;
  latency_ms: number;
  inference_ms: number | null;
  agreed: boolean;
  weight?: number;
  session_consensus: { method: string; status: string; agreed: string[]; outliers: string[] } | null;
  [field: string]: unknown;
}

export interface WorkResult {
  family: WorkSpec["family"];
  runs: ReplicaRun[];
  judged: Judgement[];
  agg: Aggregate;
  evidence: ReplicaEvidence[];
  weights: number[] | null;
}

export async function runWork(c: Context<AppEnv>, spec: WorkSpec): Promise<WorkResult> {
  const runs = await runReplicas(c.env, spec.targets, spec.req, spec.family, c.get("requestId"));
  const judged = runs.map((r): Judgement => {
    if (r.error || !r.task?.result)
      return { key: null, score: null, fields: {}, error: r.error ?? { code: "internal_error", message: "no result" } };
    return spec.judge(r.task.result.text);
  });
  const weights = spec.consensus.strategy === "weighted" ? await replicaWeights(c.env, runs, spec.consensus.weight_by) : null;
  const votes: Vote[] = runs.map((_r, i) => ({
    index: i,
    key: judged[i].key,
    score: judged[i].score,
    ...(weights ? { weight: weights[i] } : {}),
    error_code: judged[i].error?.code ?? null,
    // Quorums count miners, not tasks: one miner answering several replicas is one voice (aggregation.ts).
    miners: resultMiners(runs[i].task),
  }));
  const agg = aggregate(votes, {
    strategy: spec.consensus.strategy,
    policy: spec.consensus.disagreement_policy,
    requested: runs.length,
    tolerance: spec.consensus.tolerance,
  });
  const agreed = new Set(agg.agreed);
  const evidence = runs.map((r, i): ReplicaEvidence => {
    const failed = judged[i].key == null;
    const t = r.task;
    return {
      index: i,
      session_id: r.session_id,
      task_id: t?.task_id ?? null,
      status: failed ? "failed" : "ok",
      miners: resultMiners(t),
      hash: t?.result?.hash ?? null,
      ...judged[i].fields,
      latency_ms: r.latency_ms,
      inference_ms: t?.result?.inference_ms ?? null,
      agreed: agreed.has(i),
      ...(weights ? { weight: weights[i] } : {}),
      session_consensus: t?.consensus
        ? { method: t.consensus.method, status: t.consensus.status, agreed: t.consensus.agreed, outliers: t.consensus.outliers }
        : null,
      // A failed replica carries what was sent and the raw failure, so a client can see and retry it.
      ...(failed
        ? {
            error: judged[i].error ?? null,
            payload: { input: r.payload.input, params: r.payload.params, timeout_s: r.payload.timeout_s ?? null },
            raw: { error: r.error, task_status: t?.status ?? null, text: t?.result?.text ?? null },
          }
        : {}),
    };
  });
  return { family: spec.family, runs, judged, agg, evidence, weights };
}

/** consensus metadata as every work response shows it. */
export function consensusView(agg: Aggregate, c: Consensus, pool: string[]) {
  return {
    strategy: agg.strategy,
    disagreement_policy: agg.disagreement_policy,
    ...(agg.strategy === "weighted" ? { weight_by: c.weight_by } : {}),
    ...(agg.strategy === "median_of_means" ? { tolerance: c.tolerance ?? 0.2 } : {}),
    replicas: agg.agreed.length + agg.disagreed.length + agg.failed.length,
    session_pool: pool,
    status: agg.status,
    quorum: agg.quorum,
    agreement: agg.agreement,
    agreed: agg.agreed,
    disagreed: agg.disagreed,
    failed: agg.failed,
    candidates: agg.candidates,
  };
}

/**
 * Answers a work request: 200 with status "ok" (or "no_consensus" under return_all); a failure answers the
 * house error shape `{request_id, error}` plus status "failed", consensus and every replica's evidence. Either
 * carries the cost of the replicas that ran and a signed receipt naming them (lib/receipts.ts).
 */
export async function respond(c: Context<AppEnv>, work: WorkResult, body: Record<string, unknown>, consensus: Record<string, unknown>) {
  const request_id = c.get("requestId");
  const { agg, evidence } = work;
  const model = work.runs.find((r) => r.task)?.task?.model ?? work.runs[0]?.payload.model ?? c.env.DEFAULT_MODEL;
  const { cost, receipt } = await withReceipt(c, workFacts(work.family, work, model));
  if (agg.outcome === "failed") {
    const err = agg.error!;
    const status = ERROR_STATUS[err.code] as ContentfulStatusCode;
    return c.json(
      {
        request_id,
        status: "failed" as const,
        error: { code: err.code, message: err.message, details: { failed: agg.failed, disagreed: agg.disagreed } },
        consensus,
        replicas: evidence,
        cost,
        receipt,
      },
      status,
    );
  }
  return c.json({ request_id, status: agg.outcome, ...body, consensus, replicas: evidence, cost, receipt });
}

/** Makes the single-session tasks of v1/v2 and the fan-out of v3 one shape: the SubmitRequest they share. */
export function submitRequest(
  owner: string,
  prompt: string,
  params: SubmitRequest["params"],
  opts: { timeout?: number; client_reference?: string },
): SubmitRequest {
  return {
    input: { prompt, prompt_type: 1 },
    params,
    stream: false,
    // Explicit, so the SessionQueue's deadline is the one the router waits for (a session's own task_timeout
    // may be longer than the router's wait).
    timeout_s: opts.timeout ?? WORK_TIMEOUT_S,
    client_reference: opts.client_reference,
    owner,
  };
}
