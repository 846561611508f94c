import { workingReplicas } from "./barrier.ts";
import { VALIDATION_TIMEOUT_MS } from "./similarity-round.ts";
import { clientCutoff, type Lingering, liveReplicas, type OpenTask, phaseDeadline, type Replica } from "./task.ts";

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
    for (const r of workingReplicas(task)) {
      consider(phaseDeadline(r));
      consider(clientCutoff(task, r));
    }
  }
  return next;
}

type Overdue = { replica: Replica; state: "timed_out" | "disconnected" | "cancelled"; reason: string };

/**
 * Live replicas of an open task that must leave it now: past a router-set deadline that came before the
 * client's (ack window, precommit budget: `timed_out`, penalised), cut short by the client's precommit_timeout
 * while within them (`cancelled`, nobody's fault), or (once the grace after a wake-up is over) whose miner has
 * not reconnected. The task deadline itself is the alarm's: the task fails and its live replicas go unblamed.
 */
export function overdueReplicas(task: OpenTask, now: number, connected: ReadonlySet<string>, graceOver: boolean): Overdue[] {
  const out: Overdue[] = [];
  // A replica whose commit is held at the barrier is done: no deadline of its own is left.
  for (const replica of workingReplicas(task)) {
    const own = phaseDeadline(replica);
    const client = clientCutoff(task, replica);
    if (own <= now && own <= client) {
      const reason = replica.state === "assigned" ? "missed the ack deadline" : "missed the commit deadline";
      out.push({ replica, state: "timed_out", reason });
    } else if (client <= now && client < task.deadline_at) {
      out.push({ replica, state: "cancelled", reason: "the client's precommit_timeout passed (within the miner's own deadline)" });
    } else if (!connected.has(replica.miner) && graceOver) out.push({ replica, state: "disconnected", reason: "miner did not reconnect" });
  }
  return out;
}
