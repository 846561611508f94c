import { createMiddleware } from "hono/factory";
import type { ErrorCode } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";

// The one mapping from the router's errors to OpenAI's: every answer under /openai/* that the router's onError
// (or notFound) built as `{request_id, error: {code, message, details}}` is rewritten here, after the fact, to
// `{error: {message, type, param, code}}` with the same status — so auth, rate limits, the config guard, body
// limits and the routes' own failures all reach the `openai` client as its typed errors. The client reads the
// status (its error class), `x-request-id` (the error's request id), `retry-after(-ms)` and `x-should-retry`.

/** OpenAI's error `type` for a status. */
function typeOf(status: number, code: string): string {
  if (code === "budget_exhausted" || code === "deposit_exhausted") return "insufficient_quota";
  switch (status) {
    case 400:
    case 413:
    case 422:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 402:
      return "insufficient_quota";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 409:
      return "conflict_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

/** A field path as OpenAI writes `param`: `messages.0.content` → `messages[0].content`. */
export function paramOf(path: string): string | null {
  if (!path || path === "(body)") return null;
  return path.replace(/\.(\d+)(?=\.|$)/g, "[$1]");
}

export interface OpenAIError {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** The OpenAI error for a router failure: the first field detail, if any, is the `param` and joins the message. */
export function openaiError(status: number, code: ErrorCode | string, message: string, details: unknown): OpenAIError {
  const first = Array.isArray(details) ? (details[0] as { path?: unknown; message?: unknown } | undefined) : undefined;
  const param = typeof first?.path === "string" ? paramOf(first.path) : null;
  const detail = param && typeof first?.message === "string" ? `: ${param}: ${first.message}` : "";
  const openaiCode = code === "not_found" && param === "model" ? "model_not_found" : code;
  return { error: { message: `${message}${detail}`, type: typeOf(status, code), param, code: openaiCode } };
}

/** Seconds a client should wait before retrying a 429/503 without a Retry-After of its own. */
const DEFAULT_RETRY_S = { 429: 1, 503: 2 } as Record<number, number>;

/** Retry headers the `openai` client reads, for an error answer of `status`. */
export function retryHeaders(status: number, headers: Headers): void {
  if (status === 429 || status === 503) {
    const s = Number(headers.get("retry-after")) || DEFAULT_RETRY_S[status];
    headers.set("retry-after", String(s));
    headers.set("retry-after-ms", String(s * 1000));
  }
  // Its default retries cover 408, 409, 429 and 5xx; any other 4xx would fail again.
  if (status >= 400 && status < 500 && ![408, 409, 429].includes(status)) headers.set("x-should-retry", "false");
}

/** Mounted on /openai/* ahead of everything else that may answer an error there. */
export const openaiErrors = createMiddleware<AppEnv>(async (c, next) => {
  await next();
  const res = c.res;
  if (res.status < 400 || !(res.headers.get("content-type") ?? "").includes("application/json")) return;
  const body = (await res
    .clone()
    .json()
    .catch(() => null)) as { error?: { code?: string; message?: string; details?: unknown; type?: unknown } } | null;
  if (!body?.error || typeof body.error.code !== "string" || "type" in body.error) return;
  const mapped = openaiError(res.status, body.error.code, body.error.message ?? "request failed", body.error.details);
  const headers = new Headers(res.headers);
  headers.delete("content-length");
  retryHeaders(res.status, headers);
  // Hono copies the old answer's headers onto the new one: drop it first so only these remain.
  c.res = undefined;
  c.res = new Response(JSON.stringify(mapped), { status: res.status, headers });
});
