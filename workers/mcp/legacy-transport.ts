import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  ErrorCode,
  isJSONRPCErrorResponse,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type RequestId,
} from "@modelcontextprotocol/sdk/types.js";
import type { PushResult } from "../../durable-objects/mcp-session.ts";
import { MCP_MAX_FRAME_BYTES as MAX_FRAME_BYTES } from "../../shared/mcp-limits.ts";

// The server side of one legacy HTTP+SSE POST: the SDK server reads the POSTed message from `deliver` and
// everything it sends (progress, logging, the response) goes to the session's Durable Object, which writes it
// on the session's open stream. One transport and one server per POST, so the POST may land in any isolate.

/** What the transport needs of the session object (durable-objects/mcp-session.ts). */
export interface StreamSink {
  push(json: string): Promise<PushResult>;
}

/** Why a POST's message could not be answered on the stream. */
export class StreamGone extends Error {}

const key = (id: RequestId) => JSON.stringify(id);
const isResponse = (m: JSONRPCMessage) => isJSONRPCResultResponse(m) || isJSONRPCErrorResponse(m);

export class DurableStreamTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: Transport["onmessage"];
  /** Responses this POST waits for, by request id; `swallowed` ones (a replayed initialize) are not pushed. */
  private readonly waiting = new Map<string, { done: (err?: Error) => void; swallowed: boolean }>();
  /** Sends in order: the stream shows progress before the response that follows it. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly sink: StreamSink;
  readonly sessionId: string;

  constructor(sink: StreamSink, sessionId: string) {
    this.sink = sink;
    this.sessionId = sessionId;
  }

  async start(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiting.values()) w.done(new StreamGone("transport closed"));
    this.waiting.clear();
    this.onclose?.();
  }

  send(message: JSONRPCMessage): Promise<void> {
    const waiter = isResponse(message) ? this.waiting.get(key((message as { id: RequestId }).id)) : undefined;
    if (waiter?.swallowed) {
      waiter.done();
      return Promise.resolve();
    }
    const sent = this.queue.then(() => this.push(message));
    this.queue = sent.catch(() => {});
    if (waiter)
      sent.then(
        () => waiter.done(),
        (err: Error) => waiter.done(err),
      );
    return sent;
  }

  /**
   * Hands one client message to the server. A request resolves once its response is on the stream (rejects
   * with StreamGone when the stream has gone); a notification or response resolves at once.
   */
  deliver(message: JSONRPCMessage, swallowed = false): Promise<void> {
    if (!isJSONRPCRequest(message)) {
      this.onmessage?.(message);
      return Promise.resolve();
    }
    const answered = this.answered(message, swallowed);
    this.onmessage?.(message);
    return answered;
  }

  private answered(request: JSONRPCRequest, swallowed: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(key(request.id), {
        swallowed,
        done: (err) => {
          this.waiting.delete(key(request.id));
          if (err) reject(err);
          else resolve();
        },
      });
    });
  }

  private async push(message: JSONRPCMessage): Promise<void> {
    let json = JSON.stringify(message);
    if (json.length > MAX_FRAME_BYTES && isResponse(message)) {
      // Too large for one frame: the client still gets an answer to its request, not a hang.
      const id = (message as { id: RequestId }).id;
      const error = {
        code: ErrorCode.InternalError,
        message: `response exceeds ${MAX_FRAME_BYTES} bytes, the legacy stream's frame limit`,
      };
      json = JSON.stringify({ jsonrpc: "2.0", id, error });
    }
    const result = await this.sink.push(json);
    if (result === "gone") {
      // Nobody can read what follows: end the handlers (the server aborts them, and their router tasks).
      void this.close();
      throw new StreamGone("the session's stream has closed");
    }
    if (result === "too_large") throw new Error(`message exceeds ${MAX_FRAME_BYTES} bytes, the legacy stream's frame limit`);
  }
}
