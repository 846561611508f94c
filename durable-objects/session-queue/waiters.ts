import type { Failure } from "../../shared/errors.ts";
import type { TaskView } from "../../shared/views.ts";
import type { StreamEvent, SubmitOutcome } from "./rpc.ts";
import { confirmedPrefix } from "./stream-prefix.ts";

// The clients waiting on a SessionQueue's tasks: a whole submit waits for the finished view; a streaming one
// reads NDJSON events (tokens a quorum confirmed, then `done` or `error`). Memory only: a stream does not
// survive an eviction, and the task then completes without it.

const encoder = new TextEncoder();

interface Waiter {
  resolve?: (task: TaskView) => void;
  writer?: WritableStreamDefaultWriter<Uint8Array>;
  /** Text already sent to the streaming client; a replacement replica resumes after it. */
  sent: string;
}

export class Waiters {
  private readonly waiting = new Map<number, Waiter>();

  /** Registers the submit of task `taskId`: a promise of its finished view, or its event stream. */
  add(taskId: number, stream: boolean): { done: Promise<TaskView> } | { events: ReadableStream<Uint8Array> } {
    const waiter: Waiter = { sent: "" };
    this.waiting.set(taskId, waiter);
    if (!stream) return { done: new Promise<TaskView>((resolve) => (waiter.resolve = resolve)) };
    const pipe = new TransformStream<Uint8Array, Uint8Array>();
    waiter.writer = pipe.writable.getWriter();
    return { events: pipe.readable };
  }

  /** What submit answers: at once with the event stream, or with the finished task (a failed one as a failure). */
  static async outcome(
    waiting: { done: Promise<TaskView> } | { events: ReadableStream<Uint8Array> },
    start: { task_id: string; model: string; created_at: number },
  ): Promise<SubmitOutcome> {
    if ("events" in waiting) return { ok: true, stream: true, ...start, events: waiting.events };
    const task = await waiting.done;
    return task.status === "failed" ? { ok: false, error: task.error!, task } : { ok: true, stream: false, task };
  }

  /** Text the task's streaming client already holds ("" when nobody streams it). */
  sent(taskId: number): string {
    return this.waiting.get(taskId)?.sent ?? "";
  }

  /** Sends the streaming client what a quorum of the replicas' streams now confirms beyond what it has. */
  confirm(taskId: number, streams: readonly string[], quorum: number): void {
    const waiter = this.waiting.get(taskId);
    if (!waiter?.writer) return;
    const sent = confirmedPrefix(streams, waiter.sent, quorum);
    if (sent === null) return;
    const piece = sent.slice(waiter.sent.length);
    waiter.sent = sent;
    emit(waiter.writer, { t: "token", text: piece });
  }

  /** Answers whoever waits for a finished task; a stream gets the rest of the chosen text, then `done` or `error`. */
  answer(taskId: number, view: () => TaskView): void {
    const waiter = this.waiting.get(taskId);
    this.waiting.delete(taskId);
    if (!waiter) return;
    const task = view();
    waiter.resolve?.(task);
    const w = waiter.writer;
    if (!w) return;
    if (task.status === "closed" && task.result) {
      const rest = task.result.text.startsWith(waiter.sent) ? task.result.text.slice(waiter.sent.length) : "";
      if (rest) emit(w, { t: "token", text: rest });
      emit(w, { t: "done", task });
    } else {
      const error: Failure = task.error ?? { code: "task_failed", message: "task failed" };
      emit(w, { t: "error", error, task });
    }
    w.close().catch(() => {});
  }
}

function emit(w: WritableStreamDefaultWriter<Uint8Array>, ev: StreamEvent): void {
  w.write(encoder.encode(`${JSON.stringify(ev)}\n`)).catch(() => {});
}
