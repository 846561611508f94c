import { A2A_VERSION_HEADER } from "@a2a-js/sdk";
import { isLegacyJsonRpcMethod } from "@a2a-js/sdk/compat/v0_3";
import { LegacyJsonRpcTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import { JsonRpcTransportHandler, ServerCallContext, type User, validateVersion } from "@a2a-js/sdk/server";
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";
import type { AppEnv } from "../env.ts";
import { agentCard } from "./card.ts";
import { RouterRequestHandler } from "./request-handler.ts";
import { DurableTaskStore } from "./task-store.ts";

// The Hono adapter over the SDK's framework-agnostic JSON-RPC transport handlers (the SDK ships only an Express
// one). One URL serves both protocol versions: a 0.3 method name (`message/send`, `tasks/get`, …) goes to the
// SDK's compat handler, a 1.0 name (`SendMessage`, `GetTask`, …) to the 1.0 handler. Streams answer as SSE.

type RpcOut = { jsonrpc: string; id: string | number | null; result?: unknown; error?: unknown };

/** The API-key owner, as the SDK's user: the task store is bound to the same owner. */
class Owner implements User {
  private readonly name: string;
  constructor(name: string) {
    this.name = name;
  }
  get isAuthenticated() {
    return true;
  }
  get userName() {
    return this.name;
  }
}

const isStream = (v: unknown): v is AsyncGenerator<RpcOut> => typeof (v as AsyncGenerator)?.[Symbol.asyncIterator] === "function";

/** POST /api/v1/a2a (after the API-key check). */
export async function handleJsonRpc(c: Context<AppEnv>): Promise<Response> {
  const body: unknown = await c.req.json().catch(() => null);
  const rpc = (typeof body === "object" && body !== null ? body : {}) as { method?: unknown; id?: string | number | null };
  const legacy = typeof rpc.method === "string" && isLegacyJsonRpcMethod(rpc.method);
  const mapError = legacy ? LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError : JsonRpcTransportHandler.mapToJSONRPCError;
  const rpcError = (err: unknown): RpcOut => ({ jsonrpc: "2.0", id: rpc.id ?? null, error: mapError(err) });

  const card = agentCard(c.env, new URL(c.req.url).origin);
  const header = c.req.header(A2A_VERSION_HEADER);
  try {
    if (header) validateVersion(header, card, "JSONRPC");
  } catch (err) {
    return c.json(rpcError(err));
  }
  // A body that is not JSON reaches the SDK as text, which answers the JSON-RPC parse error.
  const request = body ?? "";
  const store = new DurableTaskStore(c.env, c.get("owner"));
  const handler = new RouterRequestHandler(card, store, c);
  const context = new ServerCallContext({ user: new Owner(c.get("owner")), requestedVersion: header ?? (legacy ? "0.3" : "1.0") });
  const transport = legacy ? new LegacyJsonRpcTransportHandler(handler) : new JsonRpcTransportHandler(handler);
  const out = await transport.handle(request as Record<string, unknown> | string, context);
  if (!isStream(out)) return c.json(out);

  // The first event (or the error that precedes any) decides between an SSE stream and a JSON error.
  let first: IteratorResult<RpcOut>;
  try {
    first = await out.next();
  } catch (err) {
    return c.json(rpcError(err));
  }
  return streamSSE(c, async (sse) => {
    const pump = relay(sse, out, first, rpcError);
    // The stream is drained even after the client leaves: every event is what persists the task.
    c.executionCtx.waitUntil(pump);
    await pump;
  });
}

async function relay(
  sse: SSEStreamingApi,
  events: AsyncGenerator<RpcOut>,
  first: IteratorResult<RpcOut>,
  rpcError: (e: unknown) => RpcOut,
) {
  let open = true;
  sse.onAbort(() => {
    open = false;
  });
  const send = async (data: unknown, event?: string) => {
    if (!open) return;
    try {
      await sse.writeSSE({ data: JSON.stringify(data), event });
    } catch {
      open = false;
    }
  };
  try {
    if (!first.done) await send(first.value);
    for await (const ev of { [Symbol.asyncIterator]: () => events }) await send(ev);
  } catch (err) {
    await send(rpcError(err), "error");
  }
}
