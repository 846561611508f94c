import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { completionRequest, resolveSession } from "../lib/completion-request.ts";
import { streamCompletion } from "../lib/completion-stream.ts";
import { completionResponse } from "../lib/openai.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { submitError, submitTask } from "../lib/submit.ts";

// POST /api/v1/completions[/:sessionId]: the prompt travels inline; the answer is JSON, or SSE with `stream`.

export const completions = new Hono<AppEnv>();

completions.post("/:sessionId?", jsonBody(CompletionBody), async (c) => {
  const body = c.req.valid("json");
  const target = resolveSession(c.env, c.req.param("sessionId"), body.session_id);
  const outcome = await submitTask(c.env, target, completionRequest(body, c.get("owner")));
  if (!outcome.ok) throw submitError(outcome);
  if (!outcome.stream) return c.json(completionResponse(outcome.task, c.get("requestId")));

  const meta = { sessionId: target.session_id, taskId: outcome.task_id, model: outcome.model, created: outcome.created_at };
  return streamCompletion(c, meta, outcome.events);
});
