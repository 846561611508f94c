import type { TaskView } from "../../shared/views.ts";
import type { ModelEntry } from "./model-map.ts";

// OpenAI answer shapes: chat.completion, text_completion, their stream chunks, and model objects. `model` is the
// model-map entry's public id; the network's own ids ride along as extra fields (`task_id`, `session_id`) that
// the client ignores and a caller may read.

export type Kind = "chat" | "text";

/** What identifies one answer across its chunks. */
export interface AnswerMeta {
  kind: Kind;
  /** The model name as the caller wrote it. */
  model: string;
  sessionId: string;
  taskId: string;
  /** ms since the epoch, when the task was created. */
  created: number;
}

export function answerId(m: Pick<AnswerMeta, "kind" | "sessionId" | "taskId">): string {
  return `${m.kind === "chat" ? "chatcmpl" : "cmpl"}-${m.sessionId}-${m.taskId}`;
}

/** The usage the client reads (prompt, completion, total). */
export function usageOf(task: TaskView) {
  const u = task.result!.usage;
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.prompt_tokens + u.completion_tokens };
}

function head(m: AnswerMeta) {
  return {
    id: answerId(m),
    object: m.kind === "chat" ? "chat.completion" : "text_completion",
    created: Math.floor(m.created / 1000),
    model: m.model,
  };
}

/** The whole answer of a finished task. */
export function answerBody(m: AnswerMeta, task: TaskView) {
  const r = task.result!;
  const choice =
    m.kind === "chat"
      ? { index: 0, message: { role: "assistant", content: r.text, refusal: null }, finish_reason: r.finish_reason, logprobs: null }
      : { index: 0, text: r.text, finish_reason: r.finish_reason, logprobs: null };
  return {
    ...head(m),
    choices: [choice],
    usage: usageOf(task),
    system_fingerprint: null,
    task_id: task.task_id,
    session_id: task.session_id,
  };
}

/** One stream chunk: `text` as the delta (chat's first chunk also carries the role), or the finish. */
export function chunkBody(m: AnswerMeta, text: string, finish: string | null, first = false) {
  const chat = m.kind === "chat";
  const delta = finish ? {} : first ? { role: "assistant", content: text } : { content: text };
  const choice = chat
    ? { index: 0, delta, finish_reason: finish, logprobs: null }
    : { index: 0, text, finish_reason: finish, logprobs: null };
  return { ...head(m), object: chat ? "chat.completion.chunk" : "text_completion", choices: [choice], system_fingerprint: null };
}

/** The last chunk when the caller asked for `stream_options.include_usage`: no choices, the usage. */
export function usageChunk(m: AnswerMeta, usage: ReturnType<typeof usageOf>) {
  return { ...chunkBody(m, "", null), choices: [], usage };
}

/** A model as `/models` shows it. */
export function modelObject(e: ModelEntry, name = e.id) {
  return { id: name, object: "model", created: e.created, owned_by: e.owned_by };
}
