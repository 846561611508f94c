import type { EmbedOutcome, EmbedRequest } from "../../durable-objects/session-queue/embedding-rpc.ts";
import type { SubmitOutcome, SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import { sessionNotFound } from "../../durable-objects/tenancy.ts";
import type { Failure } from "../../shared/errors.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import { taskKeyHolders } from "./payload-keys.ts";
import { ensureConfiguredSession } from "./sessions.ts";
import { inCatalog } from "./tenancy.ts";

// The one way the router hands work to a session, for every completion, delegate, validate, factcheck and
// hosted request: a configured session that does not exist yet is created on first use and the call is made
// once more; a refused or failed submit becomes one ApiError.

/** The session a task goes to. */
export interface Target {
  session_id: string;
  /** From configuration (created on first use), not from the request. */
  configured: boolean;
  /** Settings a configured session created here gets instead of the defaults (the gateway's model map). */
  defaults?: { model?: string; redundancy?: number };
}

/** Calls the session's queue; a configured session that is not there yet is created and called once more. */
async function onSession<T extends { ok: true } | { ok: false; error: Failure }>(
  env: Env,
  target: Target,
  name: string,
  call: (queue: ReturnType<typeof sessionQueue>) => Promise<T>,
): Promise<T> {
  // A session the request names reaches its queue only when the catalog has it: a made-up id creates no Durable Object.
  if (!target.configured && !(await inCatalog(env, target.session_id)))
    return { ok: false, error: sessionNotFound(target.session_id) } as T;
  const first = await call(sessionQueue(env, target.session_id));
  if (first.ok || first.error.code !== "session_not_found" || !target.configured) return first;
  await ensureConfiguredSession(env, target.session_id, name, target.defaults);
  return call(sessionQueue(env, target.session_id));
}

/** Submits one task; `name` is what a configured session created here is for. */
export async function submitTask(env: Env, target: Target, req: SubmitRequest, name = "default"): Promise<SubmitOutcome> {
  // A private task may be verified only by miners allowlisted for its key (session-queue/verify-round.ts).
  const sealed = req.payload?.encrypted && req.task_id !== undefined;
  const full = sealed ? { ...req, verify_validators: await taskKeyHolders(env, target.session_id, String(req.task_id)) } : req;
  return onSession<SubmitOutcome>(env, target, name, (queue) => queue.submit(full));
}

/** Runs one embedding job (durable-objects/session-queue/embedding-jobs.ts) on the session, like a task. */
export function submitEmbedding(env: Env, target: Target, req: EmbedRequest): Promise<EmbedOutcome> {
  return onSession<EmbedOutcome>(env, target, "default", (queue) => queue.embed(req));
}

/**
 * Reserves the id a v2/v3 task will be submitted under (its off-chain payload and key are named by it). The
 * reservation also checks the session and its owner, and returns the session's config.
 */
export async function reserveTaskId(env: Env, target: Target, owner: string): Promise<{ task_id: number; config: SessionConfig }> {
  type Reservation = { ok: true; task_id: number; config: SessionConfig } | { ok: false; error: Failure };
  const r = await onSession<Reservation>(env, target, "default", (queue) => queue.reserveTaskId(owner));
  if (!r.ok) throw submitError(r);
  return r;
}

/** The error a client gets for a submit that was refused (no task) or whose task failed. */
export function submitError(outcome: Extract<SubmitOutcome, { ok: false }>): ApiError {
  const { code, message, details } = outcome.error;
  return new ApiError(code, message, details ?? (outcome.task ? { task_id: outcome.task.task_id, status: outcome.task.status } : null));
}
