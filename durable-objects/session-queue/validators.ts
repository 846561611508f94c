import type { MinerSocket } from "../miner-sockets.ts";
import type { OpenTask } from "./task.ts";

// Who may validate a task's outputs (similarity consensus). A replica judging its own task has a stake in the
// verdict (a lying validator makes its own output look central), so:
//   - when any eligible miner outside the task exists, only outsiders validate (never a replica);
//   - when every eligible validator is in the task, at least MIN_REPLICA_VALIDATORS of them must answer, so the
//     element-wise median of their distances outvotes one liar; with fewer, the task is judged on exact hashes
//     (and with no quorum there, it gets no answer: session-queue/quorum-gate.ts).
// The insiders are the committed replicas; only when they are too few for three does a replica the task rejected
// or timed out (caught) make up the number, and only while caught validators stay a minority of the panel: with
// redundancy 3 and one cheater, two honest replicas and the cheater, whose word the median outvotes. Without it
// one cheater getting itself rejected would leave two honest samples that differ and no round: no answer. It
// judges outputs already revealed (the commit-reveal barrier is open); private and off-chain ones never go out.
// Eligible: connected, serving the session's embedding model, not benched.

export const MIN_REPLICA_VALIDATORS = 3;

/** Which validators a round asks: outsiders (`insiders: false`) or, when none exists, the task's own replicas. */
export interface Panel {
  insiders: boolean;
  /** How many validators to have answering (the session's validator_count, at least one; three for replicas). */
  wanted: number;
  /** Answers the round needs before it judges by similarity (fewer: exact hashes). */
  need: number;
  /** How many caught replicas (rejected or timed out in the task) may make up the three insiders: 0 or a minority. */
  caught: number;
}

export function eligibleValidators(
  task: OpenTask,
  connected: readonly MinerSocket[],
  model: string,
  benched: (address: string) => boolean,
): { outsiders: MinerSocket[]; insiders: MinerSocket[]; caught: MinerSocket[] } {
  const eligible = connected.filter((m) => m.claims.models.includes(model) && !benched(m.claims.address));
  const state = (m: MinerSocket) => task.replicas.get(m.claims.address)?.state;
  return {
    outsiders: eligible.filter((m) => state(m) === undefined),
    // A replica that released, dropped or was cut short is not judged, so it has no business seeing the outputs.
    insiders: eligible.filter((m) => state(m) === "committed"),
    caught: eligible.filter((m) => state(m) === "rejected" || state(m) === "timed_out"),
  };
}

/**
 * The panel for a round: outsiders when there are any, else replicas, at least three of them answering — the
 * committed ones, made up to three by caught ones only while those stay a minority (with three: one).
 */
export function panelFor(outsiders: number, validatorCount: number, insiders = 0, caught = 0): Panel {
  const wanted = Math.max(1, validatorCount);
  if (outsiders > 0) return { insiders: false, wanted, need: 1, caught: 0 };
  const short = Math.max(0, MIN_REPLICA_VALIDATORS - insiders);
  const admitted = short > 0 && short < insiders && caught >= short ? short : 0;
  return { insiders: true, wanted: Math.max(MIN_REPLICA_VALIDATORS, wanted), need: MIN_REPLICA_VALIDATORS, caught: admitted };
}
