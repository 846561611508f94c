import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { type Context, Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { mcpSession } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { cancelTask } from "./completion.ts";
import { mcpServer } from "./server.ts";

// MCP over Streamable HTTP (POST /mcp, /mcp/messages and /messages; index.ts mounts `mcpEndpoint` there behind
// the API-key auth). A Worker cannot keep a server between requests, so every POST runs on a fresh SDK server and
// stateless transport; the session is ours: `initialize` mints an Mcp-Session-Id, recorded in its McpSession
// Durable Object with the caller's owner, and every later request must carry an id its owner holds (else 404,
// as the spec answers an unknown session). A `notifications/cancelled` arrives in a request of its own: the
// session object maps the cancelled request id to the router task that the streamed tool call recorded.

/** JSON-RPC error codes the SDK's transport uses for HTTP-level failures. */
const BAD_REQUEST = -32000;
const SESSION_NOT_FOUND = -32001;
/** Ids we mint are UUIDs; anything else that is not short visible ASCII is refused without a lookup. */
const SESSION_ID = /^[\x21-\x7e]{1,128}$/;
/** Cancellations handled per POST (a batch could carry many; each is a Durable Object call). */
const MAX_CANCELS = 16;

const rpcError = (status: number, code: number, message: string, headers: Record<string, string> = {}) =>
  Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status, headers });

/** Answers 401s on the MCP paths with the challenge MCP clients look for (the body is the router's error). */
export const mcpAuthChallenge = createMiddleware<AppEnv>(async (c, next) => {
  await next();
  if (c.res.status === 401) c.res.headers.set("WWW-Authenticate", 'Bearer realm="mcp"');
});

type Message = { method?: unknown; params?: { requestId?: unknown; _meta?: { progressToken?: unknown } } };

/** The caller's session from Mcp-Session-Id, or the error Response to answer. */
async function session(c: Context<AppEnv>): Promise<string | Response> {
  const id = c.req.header("mcp-session-id");
  if (!id) return rpcError(400, BAD_REQUEST, "Bad Request: Mcp-Session-Id header is required (initialize first)");
  if (!SESSION_ID.test(id) || !(await mcpSession(c.env, id).use(c.get("owner")))) {
    return rpcError(404, SESSION_NOT_FOUND, "Session not found");
  }
  return id;
}

/** Cancels the router tasks of the requests that `notifications/cancelled` names (unknown ones are marked). */
async function cancellations(c: Context<AppEnv>, sessionId: string, messages: Message[]): Promise<void> {
  const cancelled = messages.filter((m) => m?.method === "notifications/cancelled" && m.params?.requestId !== undefined);
  for (const m of cancelled.slice(0, MAX_CANCELS)) {
    const task = await mcpSession(c.env, sessionId).cancel(JSON.stringify(m.params?.requestId));
    // As the caller: the REST route checks the task is theirs.
    if (task) await cancelTask(c, task).catch(() => {});
  }
}

/**
 * The transport's view of the request: SSE answers when the client takes them and a tool call asked for progress
 * (the only thing worth streaming), JSON otherwise. A client that accepts JSON only still gets JSON (the SDK
 * transport insists on both types in Accept, so it is told so).
 */
function transportRequest(c: Context<AppEnv>, text: string, messages: Message[]): { req: Request; json: boolean } {
  const accept = c.req.header("accept") ?? "";
  const sse = accept.includes("text/event-stream");
  const progress = messages.some((m) => m?.method === "tools/call" && m.params?._meta?.progressToken !== undefined);
  const headers = new Headers(c.req.raw.headers);
  if (!sse && (accept.includes("application/json") || accept.includes("*/*"))) headers.set("accept", "application/json, text/event-stream");
  return { req: new Request(c.req.url, { method: "POST", headers, body: text }), json: !(sse && progress) };
}

async function post(c: Context<AppEnv>): Promise<Response> {
  const text = await c.req.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined; // the transport answers the parse error
  }
  const messages = (Array.isArray(parsed) ? parsed : [parsed]) as Message[];
  const init = messages.some((m) => isInitializeRequest(m));
  let sessionId: string;
  if (init || parsed === undefined) sessionId = crypto.randomUUID();
  else {
    const found = await session(c);
    if (found instanceof Response) return found;
    sessionId = found;
    await cancellations(c, sessionId, messages);
  }
  const stub = mcpSession(c.env, sessionId);
  const server = mcpServer(c, {
    onTask: (requestId, task) => stub.track(requestId, task),
    onTaskEnd: (requestId) => stub.untrack(requestId),
  });
  const { req, json } = transportRequest(c, text, messages);
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: json });
  await server.connect(transport);
  const res = await transport.handleRequest(req, parsed === undefined ? undefined : { parsedBody: parsed });
  if (init && res.status === 200) await stub.open(c.get("owner"), "streamable", sessionId);
  else if (init || parsed === undefined) return res;
  const headers = new Headers(res.headers);
  headers.set("mcp-session-id", sessionId);
  return new Response(res.body, { status: res.status, headers });
}

/** DELETE ends the session (the spec's way for a client to leave). */
async function remove(c: Context<AppEnv>): Promise<Response> {
  const found = await session(c);
  if (found instanceof Response) return found;
  await mcpSession(c.env, found).close();
  return new Response(null, { status: 200 });
}

export const mcpEndpoint = new Hono<AppEnv>();
mcpEndpoint.post("/", post);
mcpEndpoint.delete("/", remove);
// No server-initiated stream: every answer and notification rides its own POST (the spec allows 405 here).
mcpEndpoint.get("/", () =>
  rpcError(405, BAD_REQUEST, "Method Not Allowed: this server has no standalone SSE stream", { Allow: "POST, DELETE" }),
);
