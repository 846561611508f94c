import type { Context } from "hono";
import type { AppEnv } from "../env.ts";

export type { RestFetch } from "../env.ts";

// The agent surfaces (MCP, A2A) are adapters over the REST routes: a tool call or skill is one REST request,
// made in-process with the caller's own credentials. Auth, tenancy, validation, limits and error codes are
// then the REST route's, and cannot drift between surfaces.

export interface RestCall {
  method: "GET" | "POST";
  /** Path under the router, e.g. `/api/v1/completions`. */
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** A payment receipt, forwarded as the payment header (x402). */
  payment?: string;
  signal?: AbortSignal;
}

/** Headers of the outer request that the inner one carries: the caller's credentials and client IP. */
const FORWARDED = ["authorization", "cf-connecting-ip", "x-payment", "payment-signature"];

/**
 * The first REST request callRest makes for an outer request (the MCP POST, the A2A call), which was already
 * counted against the caller's rate limit: middleware/rate-limit.ts does not count it again, so one tool call
 * costs one request. Later ones for the same outer request (a JSON-RPC batch of tool calls) count as usual.
 * Only in-process Request objects can be members: no client can put a request of its own in these sets.
 */
const inProcess = new WeakSet<Request>();
const freeUsed = new WeakSet<Request>();

/** Whether `req` is an in-process REST request made by callRest (already counted as its outer request). */
export const madeByCallRest = (req: Request): boolean => inProcess.has(req);

/** The outer request's context of every in-process request: its work is metered as the outer request's (lib/usage-record.ts). */
const outerOf = new WeakMap<Request, Context<AppEnv>>();

/** The context of the request that made `req` through callRest, else undefined (a client's request). */
export const outerContextOf = (req: Request): Context<AppEnv> | undefined => outerOf.get(req);

/**
 * The x402 variant of a REST route (routes/x402.ts; Cortensor's `_x402` route keys), where one exists: a call that
 * carries a payment is made there, so the payment pays for it instead of the caller's key.
 */
const X402_PATHS: [RegExp, string][] = [
  [/^\/api\/v1\/completions(?=\/|$)/, "/api/v1/x402/completions"],
  [/^\/api\/(v1|v2)\/(delegate|validate)$/, "/api/$1/x402/$2"],
  [/^\/api\/v1\/(factcheck|fact-check)$/, "/api/v1/x402/$1"],
];

export function x402PathOf(path: string): string | undefined {
  for (const [re, to] of X402_PATHS) if (re.test(path)) return path.replace(re, to);
  return undefined;
}

/** Makes one REST request as the caller of `c`. */
export function callRest(c: Context<AppEnv>, call: RestCall): Promise<Response> {
  const url = new URL((call.payment && x402PathOf(call.path)) || call.path, c.req.url);
  for (const [k, v] of Object.entries(call.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const headers = new Headers();
  for (const h of FORWARDED) {
    const v = c.req.header(h);
    if (v) headers.set(h, v);
  }
  if (call.payment) headers.set("x-payment", call.payment);
  if (call.body !== undefined) headers.set("content-type", "application/json");
  const body = call.body === undefined ? undefined : JSON.stringify(call.body);
  const req = new Request(url, { method: call.method, headers, body, signal: call.signal });
  outerOf.set(req, c);
  if (!freeUsed.has(c.req.raw)) {
    freeUsed.add(c.req.raw);
    inProcess.add(req);
  }
  return Promise.resolve(c.get("restFetch")(req));
}

/** The JSON of a REST answer, with its status. */
export async function restJson(c: Context<AppEnv>, call: RestCall): Promise<{ status: number; body: unknown }> {
  const res = await callRest(c, call);
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** The `data:` payloads of an SSE answer, parsed as JSON, up to `[DONE]`. */
export async function* sseData(res: Response): AsyncGenerator<unknown> {
  if (!res.body) return;
  let buffered = "";
  for await (const piece of res.body.pipeThrough(new TextDecoderStream())) {
    buffered += piece;
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const frame = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = frame
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}
