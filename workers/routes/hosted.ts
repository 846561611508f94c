import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { ERROR_STATUS, type ErrorCode } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { SESSION_ID } from "../lib/schemas.ts";
import { jsonBody } from "../lib/validate.ts";
import { apiKeyAuth } from "../middleware/auth.ts";

// The hosted entry: `POST /v1/completions` with the OpenAI-style `{model, prompt, max_tokens, temperature,
// top_p, stream}`, forwarded to the router's own `/api/v3/completions` (same request id) and answered in the
// gateway envelope `{request_id, status: "ok"|"failed", model, router_pool, data, error}`. A failure the router
// reports (its `timeout` included) keeps its code and HTTP status; when the router has not answered within
// HOSTED_TIMEOUT_MS (default 300 s, the documented proxy read timeout) the entry itself answers 504 `timeout`.
// `stream: true` passes the router's SSE stream through unchanged.

type Forward = (req: Request, env: Env, ctx: Parameters<Hono<AppEnv>["fetch"]>[2]) => Response | Promise<Response>;

const HostedBody = z.object({
  model: z.string().max(200).optional(),
  prompt: z.string().min(1, "prompt must not be empty"),
  max_tokens: z.number().int().min(1).max(4096).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  stream: z.boolean().default(false),
  /** Seconds; passed on to the task. */
  timeout: z.number().positive().max(300).optional(),
  session_id: z.string().regex(SESSION_ID).optional(),
});

export function hostedEntry(forward: Forward): Hono<AppEnv> {
  const hosted = new Hono<AppEnv>();
  hosted.post("/v1/completions", apiKeyAuth, jsonBody(HostedBody), async (c) => {
    const b = c.req.valid("json");
    const request_id = c.get("requestId");
    const envelope = (status: "ok" | "failed", data: unknown, error: { code: ErrorCode; message: string; details: unknown } | null) => ({
      request_id,
      status,
      model: b.model ?? c.env.DEFAULT_MODEL,
      router_pool: c.env.ROUTER_NAME,
      data,
      error,
    });
    const { model: _, ...rest } = b;
    const url = new URL("/api/v3/completions", c.req.url);
    const inner = new Request(url, {
      method: "POST",
      headers: {
        authorization: c.req.header("Authorization") ?? "",
        "content-type": "application/json",
        "X-Request-ID": request_id,
      },
      body: JSON.stringify(b.model ? { ...rest, model: b.model } : rest),
    });
    const waitMs = Number(c.env.HOSTED_TIMEOUT_MS) || 300_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), waitMs)));
    let res: Response | "timeout";
    try {
      res = await Promise.race([Promise.resolve(forward(inner, c.env, c.executionCtx)), deadline]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
    if (res === "timeout") {
      return c.json(envelope("failed", null, { code: "timeout", message: `the router did not answer within ${waitMs} ms`, details: null }), 504);
    }
    if (b.stream && res.ok) return res;
    const body = (await res.json().catch(() => null)) as { error?: { code: ErrorCode; message: string; details: unknown } } | null;
    if (!res.ok || !body || body.error) {
      const error = body?.error ?? { code: "internal_error" as const, message: `router answered ${res.status}`, details: null };
      const status = (ERROR_STATUS[error.code] ?? res.status) as ContentfulStatusCode;
      return c.json(envelope("failed", null, error), status);
    }
    return c.json(envelope("ok", body, null));
  });
  return hosted;
}
