import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { completionRequest, resolveSession } from "../lib/completion-request.ts";
import { streamCompletion } from "../lib/completion-stream.ts";
import { completionResponse } from "../lib/openai.ts";
import { receiptHeaders, taskFacts, withReceipt } from "../lib/receipts.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { submitError, submitTask } from "../lib/submit.ts";

// POST /api/v1/completions[/:sessionId]: the prompt travels inline; the answer is JSON, or SSE with `stream`;
// either carries its cost and signed receipt (lib/receipts.ts).

export const completions = new Hono<AppEnv>();

completions.post("/:sessionId?", jsonBody(CompletionBody), async (c) => {
  const body = c.req.valid("json");
  const target = resolveSession(c.env, c.req.param("sessionId"), body.session_id);
  const outcome = await submitTask(c.env, target, completionRequest(body, c.get("owner")));
  if (!outcome.ok) throw submitError(outcome);
  if (!outcome.stream) {
    const { cost, receipt } = await withReceipt(c, taskFacts("completion", outcome.task));
    return c.json({ ...completionResponse(outcome.task, c.get("requestId")), cost, receipt });
  }

  const meta = { sessionId: target.session_id, taskId: outcome.task_id, model: outcome.model, created: outcome.created_at };
  receiptHeaders(c);
  // The receipt rides in the final chunk (the one with finish_reason and usage): headers are gone by then.
  return streamCompletion(c, meta, outcome.events, (task) => withReceipt(c, taskFacts("completion", task), { headers: false }));
});
