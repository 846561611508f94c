import { replicaIsLive } from "../../shared/task-state.ts";
import type { ConsensusView } from "../../shared/views.ts";
import type { Outcome, ReplicaOutcome } from "../reputation.ts";
import { type OpenTask, phaseDeadline, type Replica, replicasOf } from "./task.ts";

// What each replica of a finished task is answerable for in the pool's ledger (see README, "Reputation, stake
// and the ledger"): agreed replicas share the task's tokens, outliers and the timed-out are penalised, the
// rejected are slashed; a disconnect or a hand-back counts as a task only.

export interface Stamp {
  session_id: string;
  at: number;
  block: number;
}

function outcomeOf(
  r: Replica,
  consensus: ConsensusView | null,
  agreed: Set<string>,
  timedOutAt: number | null,
): [Outcome, string | null] | null {
  // Failed verification: an outlier whatever became of the task, its failing positions the reason.
  if (r.verify_failed) return ["outlier", r.reason ?? "verification failed"];
  if (r.state === "committed" && consensus?.status === "agreed") {
    return agreed.has(r.miner) ? ["agreed", r.reason ?? null] : ["outlier", "result disagrees with consensus"];
  }
  if (r.state === "rejected" || r.state === "timed_out" || r.state === "disconnected" || r.state === "released")
    return [r.state, r.reason ?? null];
  // A commit held at the barrier was in on time: its miner is not answerable for the task failing.
  // At a task timeout only a replica already past its own router-set deadline is answerable: one the client's
  // deadline cut short within it is not (session-queue/fair-deadlines.ts).
  if (timedOutAt !== null && replicaIsLive(r.state) && !r.held && phaseDeadline(r) <= timedOutAt) {
    return ["timed_out", `missed its ${r.state === "assigned" ? "ack" : "commit"} deadline before the task deadline`];
  }
  return null;
}

/** One outcome per replica that ended for a reason its miner answers for (live ones at a task timeout: past their own deadline). */
export function replicaOutcomes(
  task: OpenTask,
  consensus: ConsensusView | null,
  tokens: number,
  timedOut: boolean,
  stamp: Stamp,
): ReplicaOutcome[] {
  const agreed = new Set(consensus?.status === "agreed" ? consensus.agreed : []);
  const share = agreed.size ? Math.floor(tokens / agreed.size) : 0;
  const out: ReplicaOutcome[] = [];
  for (const r of replicasOf(task)) {
    const o = outcomeOf(r, consensus, agreed, timedOut ? task.deadline_at : null);
    if (!o) continue;
    out.push(outcomeEntry(task, r, o[0], o[1], stamp, o[0] === "agreed" ? share : 0));
  }
  return out;
}

/** One replica's ledger outcome (a straggler's is never rewarded). */
export function outcomeEntry(
  task: OpenTask,
  r: Replica,
  outcome: Outcome,
  reason: string | null,
  stamp: Stamp,
  reward = 0,
): ReplicaOutcome {
  return {
    miner: r.miner,
    session_id: stamp.session_id,
    task_id: String(task.id),
    owner: task.owner || null,
    outcome,
    reason,
    latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null,
    reward,
    at: stamp.at,
    block: stamp.block,
    ...(outcome === "rejected" && r.evidence ? { evidence: r.evidence } : {}),
  };
}
