import type { Failure } from "../../shared/errors.ts";
import { type ReplicaState, replicaIsLive } from "../../shared/task-state.ts";
import { isHeld, unpledged } from "./barrier.ts";
import { overdueReplicas } from "./deadlines.ts";
import { endAtTaskDeadline } from "./fair-deadlines.ts";
import { expiryFailure } from "./quorum-gate.ts";
import { liveReplicas, type OpenTask, type Replica } from "./task.ts";

// The alarm's pass over open tasks and the work a vanished miner leaves behind: the lifecycle steps they call
// (settle, reveal, fail, replica state changes) stay in the SessionQueue, which hands them in as `SweepOps`.

export interface SweepOps {
  /** Validators (similarity or verify) are judging the task: their own deadlines, which end at the task's, bound it. */
  validating(id: number): boolean;
  isOpen(id: number): boolean;
  settle(task: OpenTask, now: number): void;
  reveal(task: OpenTask, now: number): boolean;
  fail(task: OpenTask, code: Failure["code"], message: string, now: number, expired: boolean): void;
  setReplicaState(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void;
  dropReplica(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void;
}

/** One alarm's pass: tasks whose replicas all reported are judged, expired ones fail, overdue replicas are dropped. */
export function sweepTasks(tasks: OpenTask[], now: number, connected: Set<string>, graceOver: boolean, ops: SweepOps): void {
  for (const task of tasks) {
    if (ops.validating(task.id)) continue;
    // Every replica reported (e.g. before an eviction dropped a validation in flight): judge them now.
    if (liveReplicas(task).length === 0) {
      ops.settle(task, now);
      if (!ops.isOpen(task.id) || ops.validating(task.id)) continue;
    }
    if (task.deadline_at <= now) {
      // Replicas that never precommitted miss it; the commits held for them may still settle the task.
      for (const r of unpledged(task)) {
        const end = endAtTaskDeadline(task, r); // blamed only past its own deadline (fair-deadlines.ts)
        ops.setReplicaState(task, r, end.state, end.reason);
      }
      ops.reveal(task, now);
      const expired = expiryFailure(task);
      if (ops.isOpen(task.id)) ops.fail(task, expired.code, expired.message, now, true);
      continue;
    }
    for (const o of overdueReplicas(task, now, connected, graceOver)) ops.dropReplica(task, o.replica, o.state, o.reason);
  }
}

/** The replicas `miner` is still working on (a held commit is in: it is not lost with the socket). */
export function liveWorkOf(tasks: OpenTask[], miner: string): [OpenTask, Replica][] {
  const work: [OpenTask, Replica][] = [];
  for (const task of tasks) {
    const r = task.replicas.get(miner);
    if (r && replicaIsLive(r.state) && !isHeld(r)) work.push([task, r]);
  }
  return work;
}
