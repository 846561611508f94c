import {
  isInitializeRequest,
  isJSONRPCNotification,
  isJSONRPCRequest,
  type JSONRPCMessage,
  JSONRPCMessageSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { type Context, Hono } from "hono";
import { mcpSession } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { cancelTask } from "./completion.ts";
import { DurableStreamTransport, StreamGone } from "./legacy-transport.ts";
import { mcpServer } from "./server.ts";

// MCP's legacy HTTP+SSE transport (protocol 2024-11-05, still what many clients speak): `GET /sse` (or
// `/mcp/legacy`) opens a session and its stream, whose first event names where to POST; every POST carries the
// session id, and its answer arrives on the stream. The stream and the session live in a Durable Object
// (durable-objects/mcp-session.ts), so a POST reaches the stream from whichever isolate it lands in. Each POST
// runs its message through a fresh MCP server (workers/mcp/server.ts: every tool is one REST call as the
// caller) whose transport writes to the stream; the POST answers 202 once the message's response is written.

/** Where the `endpoint` event sends the client's POSTs (relative: the client resolves it against the SSE URL). */
export const LEGACY_MESSAGES_PATH = "/mcp/legacy/messages";
/** Session ids are 32 random bytes in hex: unguessable, and a malformed one is refused without a lookup. */
const SESSION_ID = /^[0-9a-f]{64}$/;
/** The id of the replayed `initialize` on a fresh server; its response is never written to the stream. */
const REPLAY_ID = "mcp-legacy-replayed-initialize";

export const legacyMcp = new Hono<AppEnv>();

function newSessionId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An unknown, expired, closed or someone else's session: all look the same, and the client reconnects. */
const unknownSession = () => new ApiError("not_found", "unknown or expired MCP session: open a new stream (GET /sse)");

async function openStream(c: Context<AppEnv>): Promise<Response> {
  const id = newSessionId();
  const session = mcpSession(c.env, id);
  const readable = await session.openStream(c.get("owner"), id, `${LEGACY_MESSAGES_PATH}?sessionId=${id}`);
  if (!readable) {
    throw new ApiError("mcp_stream_limit", "this API key holds the most open MCP streams it may: close one first");
  }
  // The object would only learn of a client that went away at its next write; this end hears it at once.
  const reader = readable.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const { value, done } = await reader.read();
      if (done) ctrl.close();
      else ctrl.enqueue(value);
    },
    cancel(reason) {
      c.executionCtx.waitUntil(Promise.all([reader.cancel(reason), session.close()]));
    },
  });
  return c.body(body, 200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform" });
}

/** The POSTed JSON-RPC message: 400 when it is not JSON or not one JSON-RPC message. */
async function message(c: Context<AppEnv>): Promise<JSONRPCMessage> {
  let raw: unknown;
  try {
    raw = JSON.parse(await c.req.text());
  } catch {
    throw new ApiError("invalid_request", "the body is not JSON");
  }
  const parsed = JSONRPCMessageSchema.safeParse(raw);
  if (!parsed.success) throw new ApiError("invalid_request", "the body is not a JSON-RPC message (batches are not taken)");
  return parsed.data;
}

/** `notifications/cancelled`: the call's router task is cancelled as the caller (REST), which ends its POST. */
async function cancelCall(c: Context<AppEnv>, sessionId: string, requestId: unknown): Promise<void> {
  if (typeof requestId !== "string" && typeof requestId !== "number") return;
  const task = await mcpSession(c.env, sessionId).cancel(JSON.stringify(requestId));
  // Not yet tracked: the cancel mark makes the call cancel its task as soon as it has one. A task that finished
  // meanwhile answers 409, and there is nothing left to do.
  if (task) await cancelTask(c, task);
}

async function handleMessage(c: Context<AppEnv>): Promise<Response> {
  const sessionId = c.req.query("sessionId") ?? "";
  if (!sessionId) throw new ApiError("invalid_request", "missing `sessionId` query parameter");
  const session = mcpSession(c.env, sessionId);
  if (!SESSION_ID.test(sessionId) || !(await session.use(c.get("owner")))) throw unknownSession();
  const msg = await message(c);
  if (isJSONRPCNotification(msg) && msg.method === "notifications/cancelled") await cancelCall(c, sessionId, msg.params?.requestId);
  // Other notifications (initialized, roots changed) and responses change nothing on a server that lives one POST.
  if (!isJSONRPCRequest(msg)) return c.text("Accepted", 202);
  const init = isInitializeRequest(msg) ? null : await session.initParams();
  if (isInitializeRequest(msg)) await session.setInitParams(JSON.stringify(msg.params));
  const server = mcpServer(c, {
    onTask: (requestId, task) => session.track(requestId, task),
    onTaskEnd: (requestId) => session.untrack(requestId),
  });
  const transport = new DurableStreamTransport(session, sessionId);
  await server.connect(transport);
  try {
    // The server is fresh: it learns the client's capabilities and version from the replayed initialize.
    if (init) await transport.deliver({ jsonrpc: "2.0", id: REPLAY_ID, method: "initialize", params: JSON.parse(init) }, true);
    await transport.deliver(msg);
  } catch (err) {
    if (err instanceof StreamGone) throw unknownSession();
    throw err;
  } finally {
    await server.close();
  }
  return c.text("Accepted", 202);
}

legacyMcp.get("/sse", openStream);
legacyMcp.get("/mcp/legacy", openStream);
legacyMcp.post(LEGACY_MESSAGES_PATH, handleMessage);
// Cortensor's path for clients configured with it; without a session id it is not ours (Streamable HTTP's alias).
legacyMcp.post("/messages", (c, next) => (c.req.query("sessionId") === undefined ? next() : handleMessage(c)));
