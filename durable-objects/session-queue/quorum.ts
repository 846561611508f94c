import type { ReplicaState, TaskState } from "../../shared/task-state.ts";
import type { ConsensusMode, ConsensusView } from "../../shared/views.ts";

// Quorum rules of a task's redundant replicas, as pure functions: how many must agree, how far the task has
// got, when it may be judged, and the exact-hash verdict.

/** A strict majority of the task's replica slots. */
export const quorumOf = (redundancy: number): number => Math.floor(redundancy / 2) + 1;

const PHASES = ["queued", "assigned", "acked", "precommitted", "committed"] as const;
const RANK: Partial<Record<ReplicaState, number>> = { assigned: 1, acked: 2, precommitted: 3, committed: 4 };

/**
 * The furthest phase a quorum of the counted replicas (live or committed) has reached; with fewer replicas than
 * a quorum, the furthest all of them reached.
 */
export function quorumPhase(states: readonly ReplicaState[], redundancy: number): TaskState {
  const ranks = states.map((s) => RANK[s] ?? 0).sort((a, b) => b - a);
  const needed = Math.min(quorumOf(redundancy), ranks.length);
  return PHASES[needed > 0 ? ranks[needed - 1] : 0];
}

/** The largest group of committed replicas with one hash; on a tie, the group whose first member came first. */
export function largestHashGroup<R extends { hash: string | null }>(committed: readonly R[]): R[] | undefined {
  const groups = new Map<string | null, R[]>();
  for (const r of committed) groups.set(r.hash, [...(groups.get(r.hash) ?? []), r]);
  return [...groups.values()].sort((a, b) => b.length - a.length)[0];
}

export interface SettleInput {
  mode: ConsensusMode;
  redundancy: number;
  /** Committed replicas. */
  committed: number;
  /** Size of the largest group of equal hashes among them. */
  best: number;
  /** Whether any replica is still working. */
  live: boolean;
  /** Similarity sessions: whether an empty slot may still be filled by a connected miner. */
  filling: boolean;
}

/**
 * What settling a task does now. `exact` sessions wait for replacements to fill every slot; the others judge a
 * quorum of what came in. A `similarity` session with k > 1 waits until nothing is running or can still be
 * filled: its honest replicas differ, so an early exact pair proves little. Differing outputs go to validators
 * (`similarity`) unless the session is `exact`, when the largest group stands.
 */
export function settleStep(s: SettleInput): "wait" | "exact" | "similarity" {
  if (s.committed === 0) return "wait";
  const quorum = quorumOf(s.redundancy);
  const finished = !s.live && !s.filling && s.committed >= (s.mode === "exact" ? s.redundancy : quorum);
  if (s.mode === "similarity" && s.redundancy > 1 ? !finished : s.best < quorum && !finished) return "wait";
  const disagree = s.best < s.committed && (s.mode === "similarity" || s.best < quorum);
  return disagree && s.mode !== "exact" && s.committed >= 2 ? "similarity" : "exact";
}

/** The exact-hash verdict over committed replicas: the largest group of equal hashes, agreed when it is a quorum. */
export function exactVerdict(
  committed: readonly { miner: string; hash: string | null }[],
  redundancy: number,
  opts: { method?: "exact" | "single"; note?: string } = {},
): { chosen: string; consensus: ConsensusView } {
  const best = largestHashGroup(committed);
  if (!best) throw new Error("exactVerdict needs at least one committed replica");
  const quorum = quorumOf(redundancy);
  const hash = best[0].hash!;
  return {
    chosen: best[0].miner,
    consensus: {
      method: opts.method ?? (redundancy === 1 ? "single" : "exact"),
      status: best.length >= quorum ? "agreed" : "no_quorum",
      quorum,
      hash,
      agreed: best.map((r) => r.miner),
      outliers: committed.filter((r) => r.hash !== hash).map((r) => r.miner),
      ...(opts.note ? { note: opts.note } : {}),
    },
  };
}
