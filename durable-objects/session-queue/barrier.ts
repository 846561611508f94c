import type { Hex } from "viem";
import { replicaIsLive } from "../../shared/task-state.ts";
import { type HeldCommit, type OpenTask, type Replica, replicasOf } from "./task.ts";
import type { TaskStore } from "./task-store.ts";

// The commit-reveal barrier. No replica's output is accepted as revealed until every live replica of its task
// has precommitted (a commitment that binds its miner: shared/signing.ts `commitmentHash`) or left the task
// (missed its deadline, was rejected, dropped, handed it back). A commit that arrives before that is checked
// and written but held: its replica still reads `precommitted`, and the task cannot settle on it. Once the
// barrier opens every held commit is applied in arrival order. A replacement assigned later closes the barrier
// again until it has precommitted, so nothing revealed after its assignment settles the task without its
// commitment. What the task view shows while a task runs is in task-store.ts `view` (no text, hash or
// commitment before the task is finished); what a streaming client gets is in stream-prefix.ts.

/** Whether the replica is done working: its commit is in, held at the barrier. */
export const isHeld = (r: Replica): boolean => r.held !== undefined;

/** Live replicas still working on the task (a held commit's replica has nothing left to do). */
export const workingReplicas = (task: OpenTask): Replica[] => replicasOf(task).filter((r) => replicaIsLive(r.state) && !isHeld(r));

/** Whether every live replica has precommitted: only then may commits be revealed. */
export function barrierOpen(task: OpenTask): boolean {
  return replicasOf(task).every((r) => !replicaIsLive(r.state) || r.state === "precommitted");
}

/** The held commits to apply now, oldest first; none while the barrier is closed. */
export function releasable(task: OpenTask): Replica[] {
  if (!barrierOpen(task)) return [];
  return replicasOf(task)
    .filter((r) => r.state === "precommitted" && isHeld(r))
    .sort((a, b) => a.held!.at - b.held!.at);
}

/** A commit that passed its checks: written with its revealed hash, its replica still `precommitted`. */
export function holdCommit(store: TaskStore, task: OpenTask, r: Replica, msg: HeldCommit["msg"], hash: Hex, now: number): void {
  store.recordCommit(task.id, r.miner, now, msg, hash, { held: true });
  r.held = { msg, at: now, hash };
}

/** Applies every held commit the barrier releases now (each written before it counts); true when any was. */
export function revealHeld(task: OpenTask, store: TaskStore): boolean {
  const held = releasable(task);
  for (const r of held) {
    store.applyHeld(task.id, r.miner);
    const { hash, at, msg } = r.held!;
    Object.assign(r, { state: "committed", hash, committed_at: at, usage: msg.usage, held: undefined });
  }
  return held.length > 0;
}

/** At the task deadline: live replicas that never precommitted, when commits are held waiting for them. */
export function unpledged(task: OpenTask): Replica[] {
  if (!replicasOf(task).some((r) => r.state === "precommitted" && isHeld(r))) return [];
  return replicasOf(task).filter((r) => replicaIsLive(r.state) && r.state !== "precommitted");
}
