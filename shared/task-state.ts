// The task lifecycle, shared so the SessionQueue, the router's responses and the miner agree on names.
// queued → assigned → acked → precommitted → committed → validated → closed, or failed from any open state.
export const TASK_STATES = ["queued", "assigned", "acked", "precommitted", "committed", "validated", "closed", "failed"] as const;
export type TaskState = (typeof TASK_STATES)[number];

const ORDER: Record<TaskState, number> = {
  queued: 0,
  assigned: 1,
  acked: 2,
  precommitted: 3,
  committed: 4,
  validated: 5,
  closed: 6,
  failed: 7,
};

export const TERMINAL_STATES: readonly TaskState[] = ["closed", "failed"];

export function isTerminal(state: TaskState): boolean {
  return state === "closed" || state === "failed";
}

/**
 * A task only moves forward (reassignment happens at replica level, not by moving the task back), and any
 * open task may fail. Skipping phases forward is allowed: a quorum can reach `acked` before the task was
 * recorded as `assigned` when messages are batched.
 */
export function canTransition(from: TaskState, to: TaskState): boolean {
  if (isTerminal(from)) return false;
  if (to === "failed") return true;
  return ORDER[to] > ORDER[from];
}

export function assertTransition(from: TaskState, to: TaskState): void {
  if (!canTransition(from, to)) throw new Error(`illegal task transition ${from} → ${to}`);
}

/** Replica (one miner's share of a task) states. */
export const REPLICA_STATES = [
  "assigned",
  "acked",
  "precommitted",
  "committed",
  "timed_out",
  "released",
  "disconnected",
  "rejected",
  "cancelled",
] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];

export function replicaIsLive(state: ReplicaState): boolean {
  return state === "assigned" || state === "acked" || state === "precommitted";
}

export function phaseRank(state: TaskState): number {
  return ORDER[state];
}
