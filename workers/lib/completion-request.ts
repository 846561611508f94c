import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { ApiError } from "./api-error.ts";
import { type CompletionBody, SESSION_ID } from "./schemas.ts";
import type { Target } from "./submit.ts";

// What every completions version shares: which session a request goes to and the task it submits.

/**
 * Path id, else body `session_id`, else the configured default, else an error. The default session, however
 * named, is created on first use.
 */
export function resolveSession(env: Env, pathId: string | undefined, bodyId: string | undefined): Target {
  const id = pathId ?? bodyId ?? env.DEFAULT_SESSION_ID;
  if (!id) throw new ApiError("session_required", "no session id in the path or body, and no default session is configured");
  if (!SESSION_ID.test(id)) throw new ApiError("invalid_request", "session id is invalid", [{ path: "session_id", message: "invalid" }]);
  return { session_id: id, configured: id === env.DEFAULT_SESSION_ID };
}

/** The SessionQueue request for a completion body, prompt inline; v2/v3 replace input and stream as their policy says. */
export function completionRequest(body: CompletionBody, owner: string): SubmitRequest {
  return {
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
      ...(body.verify ? { verify: body.verify } : {}),
    },
    stream: body.stream,
    timeout_s: body.timeout,
    precommit_timeout_s: body.precommit_timeout,
    client_reference: body.client_reference,
    model: body.model,
    max_miners: body.max_miners,
    owner,
  };
}
