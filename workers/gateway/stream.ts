import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { StreamEvent } from "../../durable-objects/session-queue/rpc.ts";
import { ERROR_STATUS } from "../../shared/errors.ts";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { openaiError } from "./errors.ts";
import { type AnswerMeta, chunkBody, usageChunk, usageOf } from "./responses.ts";

// A SessionQueue's NDJSON events as OpenAI stream chunks: the text as it comes (chat's first chunk names the
// role), a chunk with the finish reason, with `stream_options.include_usage` one more chunk with no choices and
// the usage, then `data: [DONE]`. A failure after the answer started is `data: {"error": …}` in OpenAI's shape,
// which makes the client throw. `onDone` runs before the finish chunk is written (it sets what metering reads).

/** The NDJSON events of a stream, parsed. */
async function* events(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  let buffered = "";
  for await (const piece of body.pipeThrough(new TextDecoderStream())) {
    buffered += piece;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim()) yield JSON.parse(line) as StreamEvent;
    }
  }
}

export function streamAnswer(
  c: Context<AppEnv>,
  meta: AnswerMeta,
  body: ReadableStream<Uint8Array>,
  /** `onDone` prices and signs the finished task: its fields join the last chunk (the usage chunk, else the finish). */
  opts: { includeUsage: boolean; onDone: (task: TaskView) => Promise<Record<string, unknown>> },
) {
  return streamSSE(c, async (sse) => {
    const send = (data: unknown) => sse.writeSSE({ data: JSON.stringify(data) });
    let first = true;
    for await (const ev of events(body)) {
      if (ev.t === "token") {
        if (ev.text === "" && !first) continue;
        await send(chunkBody(meta, ev.text, null, first));
        first = false;
      } else if (ev.t === "done") {
        const extra = await opts.onDone(ev.task);
        if (first) await send(chunkBody(meta, "", null, true)); // a chat answer always names its role
        const finish = chunkBody(meta, "", ev.task.result!.finish_reason);
        await send(opts.includeUsage ? finish : { ...finish, ...extra });
        if (opts.includeUsage) await send({ ...usageChunk(meta, usageOf(ev.task)), ...extra });
      } else {
        const details = { task_id: ev.task.task_id, status: ev.task.status };
        await send(openaiError(ERROR_STATUS[ev.error.code] ?? 500, ev.error.code, ev.error.message, details));
      }
    }
    await sse.writeSSE({ data: "[DONE]" });
  });
}
