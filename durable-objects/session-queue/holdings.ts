import type { Failure } from "../../shared/errors.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";
import { parseTaskId } from "../../shared/task-id.ts";
import { replicaIsLive } from "../../shared/task-state.ts";
import { resultWriteFault } from "./commit-checks.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { Stragglers } from "./stragglers.ts";
import type { OpenTask, Replica } from "./task.ts";

// What a miner holds in a session: a live or reconnecting replica of an open task or of a straggler. The router's
// off-chain routes authorize miners by it, and a miner holding work may rejoin to finish it.

const holding = (r: Replica | undefined): r is Replica => !!r && (replicaIsLive(r.state) || r.state === "disconnected");

/** The task `taskId` (open, or closed with live stragglers; null names none) and the miner's replica of it when it holds it. */
export function heldReplica(
  open: OpenTasks,
  stragglers: Stragglers,
  taskId: number | null,
  miner: string,
): { task: OpenTask | undefined; replica: Replica | undefined } {
  if (taskId === null) return { task: undefined, replica: undefined };
  const task = open.get(taskId) ?? stragglers.get(taskId)?.task;
  const r = task?.replicas.get(miner.toLowerCase());
  return { task, replica: holding(r) ? r : undefined };
}

/** Whether `miner` holds task `taskId` (its canonical decimal id), and the task's payload descriptor (SessionQueue.holdsTask). */
export function holdsTask(open: OpenTasks, stragglers: Stragglers, taskId: string, miner: string) {
  const { task, replica } = heldReplica(open, stragglers, parseTaskId(taskId), miner);
  return { held: !!replica, payload: task?.assign.payload ?? null };
}

/** Whether the miner holds any work in the session. */
export function holdsWork(open: OpenTasks, stragglers: Stragglers, miner: string): boolean {
  const holds = (t: OpenTask) => holding(t.replicas.get(miner));
  return open.list().some(holds) || [...stragglers.values()].some((l) => holds(l.task));
}

/** Claims the miner's one off-chain result write of a payload task it holds (session-queue/commit-checks.ts). */
export function claimResultWrite(
  open: OpenTasks,
  stragglers: Stragglers,
  taskId: string,
  miner: string,
  sha256: string,
): { ok: true; payload: PayloadDescriptor } | { ok: false; error: Failure } {
  const { task, replica } = heldReplica(open, stragglers, parseTaskId(taskId), miner);
  const payload = task?.assign.payload ?? null;
  const fault = resultWriteFault(taskId, replica, payload, sha256);
  if (fault) return { ok: false, error: fault };
  replica!.result_claimed = sha256;
  return { ok: true, payload: payload! };
}
