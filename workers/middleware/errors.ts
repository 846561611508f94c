import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorCode } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";

const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "invalid_request",
  504: "timeout",
};

export function errorBody(c: Context<AppEnv>, code: ErrorCode, message: string, details: unknown = null) {
  return { request_id: c.get("requestId") ?? null, error: { code, message, details } };
}

/** The one place every error response is built. */
export const onError: ErrorHandler<AppEnv> = (err, c) => {
  if (err instanceof ApiError) {
    return c.json(errorBody(c, err.code, err.message, err.details), err.status);
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    return c.json(errorBody(c, CODE_BY_STATUS[status] ?? "invalid_request", err.message || "request rejected"), status);
  }
  console.error(`request ${c.get("requestId")} failed`, err);
  return c.json(errorBody(c, "internal_error", "internal error"), 500);
};

export const notFound: NotFoundHandler<AppEnv> = (c) =>
  c.json(errorBody(c, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`), 404);
