import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorCode } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { authFailureLimit } from "./rate-limit.ts";

const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "payload_too_large",
  429: "rate_limited",
  504: "timeout",
};

export function errorBody(c: Context<AppEnv>, code: ErrorCode, message: string, details: unknown = null) {
  return { request_id: c.get("requestId") ?? null, error: { code, message, details } };
}

export interface ThrownFailure {
  status: ContentfulStatusCode;
  error: { code: ErrorCode; message: string; details: unknown };
}

/** What a thrown error answers: its status and `{code, message, details}`; an unexpected one is logged. */
export function failureOf(err: unknown, c: Context<AppEnv>): ThrownFailure {
  if (err instanceof ApiError) {
    return { status: err.status, error: { code: err.code, message: err.message, details: err.details ?? null } };
  }
  if (err instanceof HTTPException && err.status < 500) {
    const status = err.status as ContentfulStatusCode;
    return {
      status,
      error: { code: CODE_BY_STATUS[status] ?? "invalid_request", message: err.message || "request rejected", details: null },
    };
  }
  // Internal faults answer a generic message; what happened goes to the log under the request id.
  console.error(`request ${c.get("requestId")} failed`, err);
  return { status: 500, error: { code: "internal_error", message: "internal error", details: null } };
}

/** The one place every error response is built. A failed authentication counts against the client's IP. */
export const onError: ErrorHandler<AppEnv> = async (err, c) => {
  let { status, error } = failureOf(err, c);
  if (status === 401) {
    const limited = await authFailureLimit(c);
    if (limited) ({ status, error } = failureOf(limited, c));
  }
  return c.json(errorBody(c, error.code, error.message, error.details), status);
};

export const notFound: NotFoundHandler<AppEnv> = (c) =>
  c.json(errorBody(c, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`), 404);
