import type { MinerSocket } from "../miner-sockets.ts";
import type { OpenTask } from "./task.ts";

// Who may validate a task's outputs (similarity consensus). A replica judging its own task has a stake in the
// verdict (a lying validator makes its own output look central), so:
//   - when any eligible miner outside the task exists, only outsiders validate (never a replica);
//   - when every eligible validator is a replica, at least MIN_REPLICA_VALIDATORS of them must answer, so the
//     element-wise median of their distances outvotes one liar; with fewer, the task is judged on exact hashes
//     (and with no quorum there, it gets no answer: session-queue/quorum-gate.ts).
// Eligible: connected, serving the session's embedding model, not benched, not caught misbehaving in this task.

export const MIN_REPLICA_VALIDATORS = 3;

/** Which validators a round asks: outsiders (`insiders: false`) or, when none exists, the task's own replicas. */
export interface Panel {
  insiders: boolean;
  /** How many validators to have answering (the session's validator_count, at least one; three for replicas). */
  wanted: number;
  /** Answers the round needs before it judges by similarity (fewer: exact hashes). */
  need: number;
}

export function eligibleValidators(
  task: OpenTask,
  connected: readonly MinerSocket[],
  model: string,
  benched: (address: string) => boolean,
): { outsiders: MinerSocket[]; insiders: MinerSocket[] } {
  const eligible = connected.filter((m) => {
    const own = task.replicas.get(m.claims.address)?.state;
    return m.claims.models.includes(model) && own !== "rejected" && own !== "timed_out" && !benched(m.claims.address);
  });
  return {
    outsiders: eligible.filter((m) => !task.replicas.has(m.claims.address)),
    // A replica that released, dropped or was cut short is not judged, so it has no business seeing the outputs.
    insiders: eligible.filter((m) => task.replicas.get(m.claims.address)?.state === "committed"),
  };
}

/** The panel for a round: outsiders when there are any, else replicas, at least three of them answering. */
export function panelFor(outsiders: number, validatorCount: number): Panel {
  const wanted = Math.max(1, validatorCount);
  if (outsiders > 0) return { insiders: false, wanted, need: 1 };
  return { insiders: true, wanted: Math.max(MIN_REPLICA_VALIDATORS, wanted), need: MIN_REPLICA_VALIDATORS };
}
