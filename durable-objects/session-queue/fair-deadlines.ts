import type { Failure } from "../../shared/errors.ts";
import type { SessionConfig } from "../../shared/views.ts";
import type { MinerClaims } from "../miner-sockets.ts";
import type { SubmitRequest } from "./rpc.ts";
import { type OpenTask, phaseDeadline, type Replica } from "./task.ts";

// Fair deadlines. Two kinds of deadline end a replica, and only one of them costs its miner reputation:
//
//   router-set  the ack window (the session's ack_timeout) and the precommit budget: ack window + prefill
//               allowance + max_tokens × the miner's own per-token allowance (TOKEN_SLACK × the time per token it
//               declared at registration, or DEADLINE_TOKEN_MS when it declared none). Missing one is `timed_out`.
//   client-set  the task's `timeout` (or the session's task_timeout) and `precommit_timeout`. A replica they cut
//               short while it was within its router-set deadlines is cancelled (replaced, or the task fails with
//               `timeout`) and nobody is penalised: a client cannot bench a miner by asking for the impossible.
//
// And a client may not ask for the impossible in the first place: a client deadline below the floor — the
// prefill allowance + max_tokens × the per-token allowance of the k-th fastest miner serving the session (k =
// the task's replicas), so k miners could make it — is refused with 400 `deadline_too_short` naming the floor.
// Refused, not raised: a client that stops waiting at its timeout learns at once that the task cannot run in
// it, instead of being kept waiting longer than it asked.

/** A miner is given this many times the time per token it declared (load, sampling, a slower prompt). */
export const TOKEN_SLACK = 2;

export interface DeadlinePolicy {
  /** Ack round trip, queueing and prefill, ms (DEADLINE_PREFILL_MS). */
  prefillMs: number;
  /** Per-token allowance of a miner that declared no speed, ms (DEADLINE_TOKEN_MS). */
  tokenMs: number;
}

const positive = (raw: string | undefined, fallback: number) => (Number(raw) > 0 ? Number(raw) : fallback);

export function deadlinePolicy(env: Pick<Env, "DEADLINE_PREFILL_MS" | "DEADLINE_TOKEN_MS">): DeadlinePolicy {
  return { prefillMs: positive(env.DEADLINE_PREFILL_MS, 1000), tokenMs: positive(env.DEADLINE_TOKEN_MS, 50) };
}

/** Milliseconds a miner is allowed per completion token. */
export function tokenAllowanceMs(claims: Pick<MinerClaims, "tokens_per_s">, policy: DeadlinePolicy): number {
  return claims.tokens_per_s ? (TOKEN_SLACK * 1000) / claims.tokens_per_s : policy.tokenMs;
}

/** A replica's router-set precommit deadline, from its assignment: ack window + prefill + tokens at its own allowance. */
export function precommitBudgetMs(
  ackMs: number,
  maxTokens: number,
  claims: Pick<MinerClaims, "tokens_per_s">,
  policy: DeadlinePolicy,
): number {
  return Math.ceil(ackMs + policy.prefillMs + maxTokens * tokenAllowanceMs(claims, policy));
}

/** A new replica's router-set windows for this miner (task.ts `newReplica`). */
export function replicaWindows(
  ackTimeoutS: number,
  maxTokens: number,
  claims: Pick<MinerClaims, "tokens_per_s">,
  policy: DeadlinePolicy,
): { ackMs: number; precommitMs: number } {
  const ackMs = ackTimeoutS * 1000;
  return { ackMs, precommitMs: precommitBudgetMs(ackMs, maxTokens, claims, policy) };
}

/**
 * The least deadline a client may set for a task of `maxTokens` on `replicas` miners: prefill + tokens at the
 * allowance of the replicas-th fastest of `miners` (all of them when fewer; the default allowance when none).
 */
export function deadlineFloorMs(
  maxTokens: number,
  replicas: number,
  miners: readonly Pick<MinerClaims, "tokens_per_s">[],
  policy: DeadlinePolicy,
): number {
  const allowances = miners.map((m) => tokenAllowanceMs(m, policy)).sort((a, b) => a - b);
  const perToken = allowances.length ? allowances[Math.min(replicas, allowances.length) - 1] : policy.tokenMs;
  return Math.ceil(policy.prefillMs + maxTokens * perToken);
}

/** A client deadline of this task below its floor (400 `deadline_too_short`, naming the floor), or null. */
export function deadlineFailure(
  config: SessionConfig,
  req: SubmitRequest,
  miners: readonly Pick<MinerClaims, "tokens_per_s">[],
  policy: DeadlinePolicy,
): Failure | null {
  const replicas = Math.max(1, Math.min(config.redundancy, req.max_miners ?? config.redundancy));
  const floorMs = deadlineFloorMs(req.params.max_tokens, replicas, miners, policy);
  const asked: [string, number | undefined][] = [
    [req.timeout_s === undefined ? "task_timeout" : "timeout", req.timeout_s ?? config.task_timeout],
    ["precommit_timeout", req.precommit_timeout_s],
  ];
  const [field, seconds] = asked.find(([, s]) => s !== undefined && s * 1000 < floorMs) ?? [];
  if (!field || seconds === undefined) return null;
  const floor_s = Math.ceil(floorMs) / 1000;
  const whose = field === "task_timeout" ? `session ${config.id}'s task_timeout` : field;
  return {
    code: "deadline_too_short",
    message: `${whose} of ${seconds} s is below this task's floor of ${floor_s} s (prefill allowance + ${req.params.max_tokens} tokens at the serving miners' speed)`,
    details: { field, requested_s: seconds, floor_s, max_tokens: req.params.max_tokens, replicas },
  };
}

/** How a live replica ends at its task's (client-set) deadline: `timed_out` if its own deadline came first, else unblamed. */
export function endAtTaskDeadline(task: Pick<OpenTask, "deadline_at">, r: Replica): { state: "timed_out" | "cancelled"; reason: string } {
  if (phaseDeadline(r) <= task.deadline_at) return { state: "timed_out", reason: "missed the commit deadline" };
  return { state: "cancelled", reason: "the task's deadline (its client's) passed within the miner's own deadline" };
}
