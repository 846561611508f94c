import { type Context, Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { params, parseBody, query } from "../lib/request-validation.ts";
import { ListQuery, SessionParam, TaskParam } from "../lib/schemas.ts";
import { catalogQueue } from "../lib/tenancy.ts";

// Tasks as the caller may see them (durable-objects/tenancy.ts): all of its own sessions' tasks, its own tasks of
// a shared session; anything else is 404, as for an id nobody has.

export const tasks = new Hono<AppEnv>();

tasks.get("/:sessionId", params(SessionParam), query(ListQuery), async (c) => {
  const { sessionId } = c.req.valid("param");
  const { limit, before } = c.req.valid("query");
  const list = await (await catalogQueue(c.env, sessionId))?.listTasks(c.get("owner"), limit, before);
  if (!list) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return c.json({ session_id: sessionId, count: list.length, tasks: list });
});

tasks.get("/:sessionId/:taskId", params(TaskParam), async (c) => {
  const { sessionId, taskId } = c.req.valid("param");
  const queue = await catalogQueue(c.env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  const read = await queue.getTask(taskId, c.get("owner"));
  if (!read.ok) throw ApiError.from(read.error);
  return c.json(read.task);
});

/** A cancel carries nothing: no body, or an empty JSON object (anything else is 400, like any unknown field). */
const CancelBody = z.object({}).strict();

async function emptyBody(c: Context<AppEnv>): Promise<void> {
  const raw = (await c.req.text()).trim();
  if (!raw) return;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new ApiError("invalid_request", "request body is not JSON");
  }
  parseBody(CancelBody, value);
}

// The owner cancels its task (session-queue/cancel.ts): 200 with the task, failed `task_cancelled`, again on a
// repeat; 409 `task_finished` once it ended otherwise; a task the caller may not see is 404 like an unknown one.
tasks.post("/:sessionId/:taskId/cancel", params(TaskParam), async (c) => {
  const { sessionId, taskId } = c.req.valid("param");
  await emptyBody(c);
  const queue = await catalogQueue(c.env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  const cancelled = await queue.cancelTask(taskId, c.get("owner"));
  if (!cancelled.ok) throw ApiError.from(cancelled.error);
  return c.json(cancelled.task);
});
