import type { Failure } from "../../shared/errors.ts";
import type { ConsensusMode, ConsensusView } from "../../shared/views.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import { largestHashGroup, quorumOf } from "./quorum.ts";
import { VALIDATION_TIMEOUT_MS } from "./similarity-round.ts";
import { countingReplicas, type OpenTask, replicasOf } from "./task.ts";

// No answer without a quorum. A redundancy-k task answers only when a quorum of its k slots (a strict majority)
// agrees, by exact hash or by similarity. A verdict without one (replicas that disagree, too few of them) does
// not reach the client: while an empty slot can still be filled before the deadline the task waits for (or
// recruits) the missing replicas and is judged again; when none can, it fails 409 `no_consensus`. A session may
// opt into `best_effort`: its task then answers the best candidate anyway, flagged `consensus.best_effort` with
// status `no_quorum`.

export type Gate = { close: ConsensusView } | { recruit: true } | { fail: Failure };

/** What a verdict does to its task: close it, wait for more replicas, or fail it. */
export function quorumGate(consensus: ConsensusView, s: { redundancy: number; bestEffort: boolean; canRecruit: boolean }): Gate {
  if (consensus.status === "agreed" || s.redundancy <= 1) return { close: consensus };
  if (s.bestEffort) return { close: { ...consensus, best_effort: true } };
  if (s.canRecruit) return { recruit: true };
  return { fail: noConsensus(consensus.agreed.length, consensus.agreed.length + consensus.outliers.length, s.redundancy) };
}

function noConsensus(agreed: number, committed: number, redundancy: number): Failure {
  const quorum = quorumOf(redundancy);
  return {
    code: "no_consensus",
    message: `no quorum: at most ${agreed} of ${redundancy} replicas agreed (${quorum} needed) among ${committed} results, and no other replica could be had in time`,
    details: { quorum, agreed, committed, redundancy },
  };
}

/**
 * Whether a missing replica can still be had: an empty slot, a connected, unbenched miner not yet in the task,
 * and time — before the deadline, less the time to judge by similarity unless the session is exact-only.
 */
export function canRecruit(task: OpenTask, unbenched: readonly MinerSocket[], mode: ConsensusMode, now: number): boolean {
  if (countingReplicas(task).length >= task.redundancy) return false;
  if (now >= task.deadline_at - (mode === "exact" ? 0 : VALIDATION_TIMEOUT_MS)) return false;
  return unbenched.some((m) => !task.replicas.has(m.claims.address));
}

/**
 * How a task that reached its deadline fails: `no_consensus` when results came in but disagree without a quorum
 * (they were there; agreement was not), else `timeout`.
 */
export function expiryFailure(task: OpenTask): Failure {
  const committed = replicasOf(task).filter((r) => r.state === "committed");
  const best = largestHashGroup(committed)?.length ?? 0;
  if (task.redundancy > 1 && committed.length >= 2 && best < committed.length) return noConsensus(best, committed.length, task.redundancy);
  return { code: "timeout", message: `task ${task.id} did not complete within its deadline` };
}
