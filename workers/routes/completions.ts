import { Hono } from "hono";
import type { SubmitOutcome } from "../../durable-objects/session-queue/rpc.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { completionRequest, resolveSession } from "../lib/completion-request.ts";
import { streamCompletion } from "../lib/completion-stream.ts";
import { completionResponse } from "../lib/openai.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { ensureDefaultSession } from "../lib/sessions.ts";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import { jsonBody } from "../lib/validate.ts";

export const completions = new Hono<AppEnv>();

async function submit(env: Env, sessionId: string, owner: string, body: CompletionBody): Promise<SubmitOutcome> {
  const req = completionRequest(body, owner);
  const outcome = await sessionQueue(env, sessionId).submit(req);
  if (!outcome.ok && outcome.error.code === "session_not_found" && sessionId === env.DEFAULT_SESSION_ID) {
    await ensureDefaultSession(env, sessionId);
    return sessionQueue(env, sessionId).submit(req);
  }
  return outcome;
}

completions.post("/:sessionId?", jsonBody(CompletionBody), async (c) => {
  const body = c.req.valid("json");
  const sessionId = resolveSession(c.env, c.req.param("sessionId"), body.session_id);
  const outcome = await submit(c.env, sessionId, c.get("owner"), body);
  if (!outcome.ok) {
    const { code, message, details } = outcome.error;
    throw new ApiError(code, message, details ?? (outcome.task ? { task_id: outcome.task.task_id, status: outcome.task.status } : null));
  }
  if (!outcome.stream) return c.json(completionResponse(outcome.task, c.get("requestId")));

  const meta = { sessionId, taskId: outcome.task_id, model: outcome.model, created: outcome.created_at };
  return streamCompletion(c, meta, outcome.events);
});
