import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { routePath } from "hono/route";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { finishRequest, meteredOf, requestState, tokensOf } from "../lib/usage-record.ts";

// One JSON line per client request on the router's log (console.log: Workers Logs / `wrangler tail` / wrangler
// dev's output), written when the answer has been sent — for a stream, when its last byte has — and then the
// request's usage and budget are settled (lib/usage-record.ts). The line carries the route's pattern (never the
// raw path with its ids), the key's id and owner, and the figures: no secret, no prompt, no answer text.
// In-process requests (MCP, A2A, the gateway's REST calls) are part of their outer request's line.

/** The fields of a log line (`"msg": "request"`). */
export interface RequestLogLine {
  msg: "request";
  ts: string;
  request_id: string | null;
  key_id: string | null;
  owner: string | null;
  method: string;
  route: string;
  status: number;
  latency_ms: number;
  model: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  /** µUSD. */
  cost: number;
  error: string | null;
}

const STREAMED = /^(text\/event-stream|application\/x-ndjson)/;

function logLine(c: Context<AppEnv>, status: number, latency: number): RequestLogLine {
  const st = requestState(c);
  const work = meteredOf(c);
  const route = routePath(c) || "(none)";
  return {
    msg: "request",
    ts: new Date(st.start).toISOString(),
    request_id: c.get("requestId") ?? null,
    key_id: st.key?.id ?? null,
    owner: st.key?.owner ?? null,
    method: c.req.method,
    route: status === 404 && route.endsWith("*") ? "(no route)" : route,
    status,
    latency_ms: latency,
    model: work[0]?.model ?? st.model ?? null,
    prompt_tokens: work.reduce((n, m) => n + (m.usage.prompt_tokens ?? 0), 0),
    completion_tokens: work.reduce((n, m) => n + tokensOf(m) - (m.usage.prompt_tokens ?? 0), 0),
    cost: work.reduce((n, m) => n + (m.cost?.total ?? 0), 0),
    error: c.error instanceof ApiError ? c.error.code : status >= 400 ? (c.error ? "internal_error" : `http_${status}`) : null,
  };
}

function finish(c: Context<AppEnv>, status: number): void {
  const st = requestState(c);
  const latency = Date.now() - st.start;
  if (!st.outer) console.log(JSON.stringify(logLine(c, status, latency)));
  finishRequest(c, status, latency);
}

/** `body` passed through unchanged; `end` runs once when it is fully read, or when the reader cancels it. */
function watched(body: ReadableStream<Uint8Array>, end: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let ended = false;
  const once = () => {
    if (ended) return;
    ended = true;
    end();
  };
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          once();
          ctrl.close();
        } else ctrl.enqueue(value);
      } catch (err) {
        once();
        ctrl.error(err);
      }
    },
    cancel(reason) {
      once();
      return reader.cancel(reason);
    },
  });
}

/** Mounted first (after the request id): times the request and logs and meters it when its answer has been sent. */
export const requestLog = createMiddleware<AppEnv>(async (c, next) => {
  requestState(c);
  await next();
  const res = c.res;
  if (!res.body || !STREAMED.test(res.headers.get("content-type") ?? "")) return finish(c, res.status);
  let ended: () => void = () => {};
  const done = new Promise<void>((resolve) => (ended = resolve));
  try {
    c.executionCtx.waitUntil(done);
  } catch {
    // No execution context (a test calling the app directly).
  }
  c.res = new Response(
    watched(res.body, () => {
      finish(c, res.status);
      ended();
    }),
    res,
  );
});
