import { Hono } from "hono";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { params, query } from "../lib/request-validation.ts";
import { ListQuery, SessionParam, TaskParam } from "../lib/schemas.ts";

export const tasks = new Hono<AppEnv>();

tasks.get("/:sessionId", params(SessionParam), query(ListQuery), async (c) => {
  const { sessionId } = c.req.valid("param");
  const { limit, before } = c.req.valid("query");
  const list = await sessionQueue(c.env, sessionId).listTasks(limit, before);
  if (!list) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return c.json({ session_id: sessionId, count: list.length, tasks: list });
});

tasks.get("/:sessionId/:taskId", params(TaskParam), async (c) => {
  const { sessionId, taskId } = c.req.valid("param");
  const task = await sessionQueue(c.env, sessionId).getTask(taskId);
  if (!task) throw new ApiError("task_not_found", `unknown task ${sessionId}/${taskId}`);
  return c.json(task);
});
