import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { StreamEvent, SubmitOutcome } from "../../durable-objects/session-queue.ts";
import type { AppEnv, Env } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { completionResponse, streamChunk } from "../lib/openai.ts";
import { CompletionBody, SESSION_ID } from "../lib/schemas.ts";
import { ensureDefaultSession } from "../lib/sessions.ts";
import { sessionQueue } from "../lib/stubs.ts";
import { jsonBody } from "../lib/validate.ts";
import { errorBody } from "../middleware/errors.ts";

export const completions = new Hono<AppEnv>();

/** Path id, else body `session_id`, else the configured default, else an error. */
function resolveSession(env: Env, pathId: string | undefined, bodyId: string | undefined): string {
  const id = pathId ?? bodyId ?? env.DEFAULT_SESSION_ID;
  if (!id) throw new ApiError("session_required", "no session id in the path or body, and no default session is configured");
  if (!SESSION_ID.test(id)) throw new ApiError("invalid_request", "session id is invalid", [{ path: "session_id", message: "invalid" }]);
  return id;
}

async function submit(env: Env, sessionId: string, owner: string, body: CompletionBody): Promise<SubmitOutcome> {
  const req = {
    input: { prompt: body.prompt, prompt_type: body.prompt_type, prompt_template: body.prompt_template },
    params: {
      max_tokens: body.max_tokens,
      temperature: body.temperature,
      top_p: body.top_p,
      top_k: body.top_k,
      presence_penalty: body.presence_penalty,
      frequency_penalty: body.frequency_penalty,
      stop: body.stop ?? [],
      seed: body.seed,
    },
    stream: body.stream,
    timeout_s: body.timeout,
    precommit_timeout_s: body.precommit_timeout,
    client_reference: body.client_reference,
    model: body.model,
    max_miners: body.max_miners,
    owner,
  };
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
  return streamSSE(c, async (sse) => {
    const lines = outcome.events.pipeThrough(new TextDecoderStream());
    let buffered = "";
    for await (const piece of lines) {
      buffered += piece;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buffered.slice(0, nl)) as StreamEvent;
        buffered = buffered.slice(nl + 1);
        if (ev.t === "token") await sse.writeSSE({ data: JSON.stringify(streamChunk(meta, ev.text)) });
        else if (ev.t === "done") {
          const r = ev.task.result!;
          await sse.writeSSE({ data: JSON.stringify(streamChunk(meta, "", { finish_reason: r.finish_reason, usage: r.usage })) });
        } else {
          const body = errorBody(c, ev.error.code, ev.error.message, { task_id: ev.task.task_id, status: ev.task.status });
          await sse.writeSSE({ data: JSON.stringify(body) });
        }
      }
    }
    await sse.writeSSE({ data: "[DONE]" });
  });
});
