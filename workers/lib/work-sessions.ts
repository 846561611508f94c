import { minerViews } from "../../durable-objects/pool-shards.ts";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import type { Failure } from "../../shared/errors.ts";
import type { TaskView } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import { SESSION_ID } from "./schemas.ts";
import { submitTask, type Target } from "./submit.ts";
import { within } from "./timeout.ts";

// Which sessions delegate / validate / factcheck work goes to, and running it there as replicas.
//
// Configured sessions (DELEGATE_SESSION_POOL, VALIDATE_SESSION_POOL, FACTCHECK_STANDARD_SESSION,
// FACTCHECK_REALTIME_SESSION, DEFAULT_SESSION_ID) are created on first use, like the default session: shared
// by every key (owner `*`), ephemeral, DEFAULT_REDUNDANCY miners each. Their ids are reserved: no key may create
// or claim them (lib/tenancy.ts). For other settings (dedicated miners, redundancy) a client names sessions of
// its own in the request (session_id, consensus.session_pool); those must already exist and serve the caller.

export type Family = "delegate" | "validate";

/** A comma-separated list of session ids from a var; an invalid id is a configuration error. */
export function parsePool(value: string | undefined, varName: string): string[] {
  const ids = (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = ids.filter((id) => !SESSION_ID.test(id));
  if (bad.length > 0) throw new ApiError("configuration_error", `${varName} lists invalid session ids`, { var: varName, invalid: bad });
  return [...new Set(ids)];
}

const POOL_VAR = { delegate: "DELEGATE_SESSION_POOL", validate: "VALIDATE_SESSION_POOL" } as const;

export function configuredPool(env: Env, family: Family): string[] {
  return parsePool(env[POOL_VAR[family]], POOL_VAR[family]);
}

/**
 * v1/v2: the body's session_id, else the first session of the family's configured pool, else the
 * configured default session, else `session_required`.
 */
export function resolveSingle(env: Env, family: Family, bodyId: string | undefined): Target {
  if (bodyId) return { session_id: bodyId, configured: false };
  const pool = configuredPool(env, family);
  if (pool.length > 0) return { session_id: pool[0], configured: true };
  const fallback = env.DEFAULT_SESSION_ID?.trim();
  if (fallback) return { session_id: fallback, configured: true };
  throw new ApiError("session_required", `no session_id in the body, no ${POOL_VAR[family]} and no DEFAULT_SESSION_ID configured`, {
    family,
    vars: [POOL_VAR[family], "DEFAULT_SESSION_ID"],
  });
}

/** v3: the request's consensus.session_pool, else the configured pool, else `configuration_error`. */
export function resolvePool(env: Env, family: Family, requested: string[] | undefined): Target[] {
  if (requested && requested.length > 0) return [...new Set(requested)].map((session_id) => ({ session_id, configured: false }));
  const pool = configuredPool(env, family);
  if (pool.length === 0) {
    throw new ApiError(
      "configuration_error",
      `v3 ${family} needs a session pool: pass consensus.session_pool or configure ${POOL_VAR[family]}`,
      { family, var: POOL_VAR[family] },
    );
  }
  return pool.map((session_id) => ({ session_id, configured: true }));
}

/** Replica i runs on pool[i mod pool size]. */
export function spread(pool: Target[], replicas: number): Target[] {
  return Array.from({ length: replicas }, (_, i) => pool[i % pool.length]);
}

export interface ReplicaRun {
  index: number;
  session_id: string;
  /** What was submitted (kept as the replica's raw payload for failure reports). */
  payload: SubmitRequest;
  task: TaskView | null;
  error: Failure | null;
  /** Router-side wall time of this replica, ms. */
  latency_ms: number;
}

/** Extra time past a task's own deadline before the router stops waiting for it. */
const ROUTER_GRACE_MS = 2_000;

/** Task deadline of delegate/validate/factcheck work whose request names none, seconds. */
export const WORK_TIMEOUT_S = 60;

/**
 * Runs one task per target, in parallel, each waited for whole (never streamed). A replica whose session
 * answers nothing by the task deadline plus a grace is recorded as a router `timeout`.
 */
/**
 * What a replica that threw records as its evidence: an ApiError as it is; anything else is an internal fault,
 * recorded with a generic message (a replica's evidence goes to the client) and logged in full.
 */
function replicaFailure(err: unknown, requestId: string, sessionId: string): Failure {
  if (err instanceof ApiError)
    return { code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) };
  console.error(`request ${requestId}: replica on session ${sessionId} failed`, err);
  return { code: "internal_error", message: "internal error" };
}

export async function runReplicas(
  env: Env,
  targets: Target[],
  req: SubmitRequest,
  family: string,
  requestId: string,
): Promise<ReplicaRun[]> {
  const waitMs = (req.timeout_s ?? WORK_TIMEOUT_S) * 1000 + ROUTER_GRACE_MS;
  return Promise.all(
    targets.map(async (target, index): Promise<ReplicaRun> => {
      const t0 = Date.now();
      const base = { index, session_id: target.session_id, payload: req };
      try {
        const outcome = await within(submitTask(env, target, req, family), waitMs);
        const latency_ms = Date.now() - t0;
        if (outcome === "timeout") {
          return {
            ...base,
            task: null,
            latency_ms,
            error: { code: "timeout", message: `no answer from session ${target.session_id} within ${waitMs} ms` },
          };
        }
        if (outcome.ok && !outcome.stream) return { ...base, task: outcome.task, error: null, latency_ms };
        if (!outcome.ok) return { ...base, task: outcome.task ?? null, error: outcome.error, latency_ms };
        return { ...base, task: null, latency_ms, error: { code: "internal_error", message: "unexpected streaming answer" } };
      } catch (err) {
        return { ...base, task: null, error: replicaFailure(err, requestId, target.session_id), latency_ms: Date.now() - t0 };
      }
    }),
  );
}

/** Miners that produced a replica's accepted result (the session's own consensus), else those assigned. */
export function resultMiners(task: TaskView | null): string[] {
  if (!task) return [];
  if (task.consensus?.agreed.length) return task.consensus.agreed;
  if (task.result) return [task.result.miner];
  return task.assigned_miners;
}

/** Per-replica weight for the `weighted` strategy: the mean reputation score or stake of its miners. */
export async function replicaWeights(env: Env, runs: ReplicaRun[], by: "reputation" | "stake"): Promise<number[]> {
  const miners = await minerViews(env, [...new Set(runs.flatMap((r) => resultMiners(r.task)))]);
  const byAddress = new Map(miners.map((m) => [m.address.toLowerCase(), by === "stake" ? m.stake : m.reputation.score]));
  return runs.map((r) => {
    const ws = resultMiners(r.task).map((a) => byAddress.get(a.toLowerCase()) ?? 0);
    return ws.length ? ws.reduce((a, b) => a + b, 0) / ws.length : 0;
  });
}
