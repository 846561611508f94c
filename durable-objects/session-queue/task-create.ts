import type { SessionConfig } from "../../shared/views.ts";
import { tokenBound } from "./admission.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { SubmitRequest } from "./rpc.ts";
import { newTask, type OpenTask } from "./task.ts";
import type { TaskStore } from "./task-store.ts";

/** Writes a submitted task (`queued`), then queues it for miners: rows before memory, as everywhere in the queue. */
export function createTask(
  store: TaskStore,
  open: OpenTasks,
  config: SessionConfig,
  req: SubmitRequest,
  now: number,
  block: (at: number) => number,
): OpenTask {
  const { task, request } = newTask(config, req, req.task_id ?? open.newId(), now, tokenBound(req));
  const at = { now, block: block(now), deadlineBlock: block(task.deadline_at), clientReference: req.client_reference ?? null };
  store.insertTask(task, request, at);
  open.add(task);
  return task;
}
