import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { StreamEvent } from "../../durable-objects/session-queue/rpc.ts";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { errorBody } from "../middleware/errors.ts";
import { streamChunk } from "./openai.ts";

/**
 * Relays a SessionQueue's NDJSON events as OpenAI-style SSE: token chunks, a final chunk with finish_reason and
 * usage (plus `onDone`'s fields: the offchain descriptor, cost and receipt), or an error body; then `[DONE]`.
 */
export function streamCompletion(
  c: Context<AppEnv>,
  meta: { sessionId: string; taskId: string; model: string; created: number },
  events: ReadableStream<Uint8Array>,
  onDone: (task: TaskView) => Record<string, unknown> | Promise<Record<string, unknown>> = () => ({}),
) {
  return streamSSE(c, async (sse) => {
    let buffered = "";
    for await (const piece of events.pipeThrough(new TextDecoderStream())) {
      buffered += piece;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buffered.slice(0, nl)) as StreamEvent;
        buffered = buffered.slice(nl + 1);
        if (ev.t === "token") await sse.writeSSE({ data: JSON.stringify(streamChunk(meta, ev.text)) });
        else if (ev.t === "done") {
          const r = ev.task.result!;
          await sse.writeSSE({
            data: JSON.stringify({
              ...streamChunk(meta, "", { finish_reason: r.finish_reason, usage: r.usage }),
              ...(await onDone(ev.task)),
            }),
          });
        } else {
          const body = errorBody(c, ev.error.code, ev.error.message, { task_id: ev.task.task_id, status: ev.task.status });
          await sse.writeSSE({ data: JSON.stringify(body) });
        }
      }
    }
    await sse.writeSSE({ data: "[DONE]" });
  });
}
