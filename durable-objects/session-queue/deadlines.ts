import { replicaIsLive } from "../../shared/task-state.ts";
import { VALIDATION_TIMEOUT_MS } from "./similarity-round.ts";
import { type Lingering, liveReplicas, type OpenTask, phaseDeadline, type Replica } from "./task.ts";

/**
 * The earliest moment the SessionQueue's alarm must look at its tasks: a task deadline, a replica's ack or commit
 * deadline (stragglers included), a validator's answer deadline, and — for similarity sessions — the moment a
 * task stops waiting for an empty slot and is judged with what it has.
 */
export function nextDeadline(
  open: Iterable<OpenTask>,
  lingering: Iterable<Lingering>,
  validatorDeadlines: Iterable<number>,
  similarity: boolean,
  now: number,
): number | null {
  let next: number | null = null;
  const consider = (t: number) => (next = next === null ? t : Math.min(next, t));
  for (const { task } of lingering) for (const r of liveReplicas(task)) consider(phaseDeadline(r));
  for (const d of validatorDeadlines) consider(d);
  for (const task of open) {
    consider(task.deadline_at);
    if (similarity && task.deadline_at - VALIDATION_TIMEOUT_MS > now) consider(task.deadline_at - VALIDATION_TIMEOUT_MS);
    for (const r of task.replicas.values()) if (replicaIsLive(r.state)) consider(phaseDeadline(r));
  }
  return next;
}

/**
 * Live replicas of an open task that must leave it now: past their ack or commit deadline, or (once the grace
 * after a wake-up is over) whose miner has not reconnected.
 */
export function overdueReplicas(
  task: OpenTask,
  now: number,
  connected: ReadonlySet<string>,
  graceOver: boolean,
): { replica: Replica; state: "timed_out" | "disconnected"; reason: string }[] {
  const out: { replica: Replica; state: "timed_out" | "disconnected"; reason: string }[] = [];
  for (const replica of liveReplicas(task)) {
    if (replica.state === "assigned" && replica.ack_deadline <= now)
      out.push({ replica, state: "timed_out", reason: "missed the ack deadline" });
    else if (replica.commit_deadline <= now) out.push({ replica, state: "timed_out", reason: "missed the commit deadline" });
    else if (!connected.has(replica.miner) && graceOver) out.push({ replica, state: "disconnected", reason: "miner did not reconnect" });
  }
  return out;
}
