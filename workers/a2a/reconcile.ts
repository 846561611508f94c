import { type Part, type Task, TaskState } from "@a2a-js/sdk";
import type { Context } from "hono";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { restJson } from "../lib/rest-call.ts";
import { agentMessage, cancellation, failure, type RouterError, type RouterTaskRef, routerTaskOf, textPart } from "./events.ts";
import { type DurableTaskStore, isTerminal } from "./task-store.ts";

// A completion's A2A task ends even when the isolate running it is gone (evicted, restarted, or cut off after a
// non-blocking answer): GetTask reads the router task behind it (one REST read as the caller) and, once that has
// ended, writes the A2A task's end from it. A live executor writes the same end itself; the store keeps the first.
// A task with no router task to read (its executor died before the first token, or delegate/validate/factcheck
// work) that has not moved for STALE_MS — far past any REST deadline — ends failed `timeout`: never a hang.

/** Longer than any REST task may run (timeouts are at most 300 s, v3 replicas run side by side). */
export const STALE_MS = 15 * 60_000;

const stamp = (task: Task, state: TaskState, parts: Part[] | null) => ({
  state,
  message: parts ? agentMessage(task.id, task.contextId, parts) : undefined,
  timestamp: new Date().toISOString(),
});

/** The A2A task `task` with the end of its router task, when that has ended; else `task` unchanged. */
export async function reconcile(c: Context<AppEnv>, store: DurableTaskStore, task: Task): Promise<Task> {
  if (isTerminal(task)) return task;
  const ref = routerTaskOf(task);
  const view = ref ? await routerView(c, ref) : null;
  const ended = structuredClone(task);
  if (view?.status === "closed" && view.result) {
    const { text, finish_reason, usage } = view.result;
    ended.artifacts = [
      {
        artifactId: "result",
        name: "result",
        description: "",
        parts: [textPart(text)],
        metadata: { ...ref, finish_reason, usage },
        extensions: [],
      },
    ];
    ended.status = stamp(task, TaskState.TASK_STATE_COMPLETED, null);
    return settle(store, ended);
  }
  let error: RouterError | null = null;
  if (view?.status === "failed") error = { code: view.error?.code ?? "task_failed", message: view.error?.message ?? "the task failed" };
  else if (Date.now() - Date.parse(task.status?.timestamp ?? "") > STALE_MS) {
    error = { code: "timeout", message: "the task's executor stopped without an answer" };
  }
  if (!error) return task;
  const cancelled = error.code === "task_cancelled";
  const f = cancelled ? cancellation() : failure(error);
  ended.status = stamp(task, cancelled ? TaskState.TASK_STATE_CANCELED : TaskState.TASK_STATE_FAILED, f.parts);
  ended.metadata = { ...ended.metadata, ...f.metadata };
  return settle(store, ended);
}

/** The router task's view as the caller reads it over REST, or null when it cannot be read. */
async function routerView(c: Context<AppEnv>, ref: RouterTaskRef): Promise<TaskView | null> {
  const path = `/api/v1/tasks/${encodeURIComponent(ref.session_id)}/${encodeURIComponent(ref.task_id)}`;
  const read = await restJson(c, { method: "GET", path });
  return read.status === 200 ? (read.body as TaskView) : null;
}

/** Stores an end; whatever end the store holds (another request's may have come first) is the answer. */
async function settle(store: DurableTaskStore, ended: Task): Promise<Task> {
  await store.save(ended);
  return (await store.stored(ended.id)) ?? ended;
}
