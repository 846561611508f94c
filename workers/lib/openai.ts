import type { TaskView } from "../../shared/views.ts";

// OpenAI `text_completion` shapes, plus the fields our clients read (task_id, session_id, miners, consensus).

export function completionId(sessionId: string, taskId: string): string {
  return `cmpl-${sessionId}-${taskId}`;
}

export function completionResponse(task: TaskView, requestId: string) {
  const result = task.result!;
  return {
    id: completionId(task.session_id, task.task_id),
    object: "text_completion" as const,
    created: Math.floor(task.created_at / 1000),
    model: task.model,
    choices: [{ text: result.text, index: 0, finish_reason: result.finish_reason, logprobs: null }],
    usage: result.usage,
    task_id: task.task_id,
    session_id: task.session_id,
    request_id: requestId,
    miners: task.replicas
      .filter((r) => r.state === "committed")
      .map((r) => ({ address: r.miner, latency_ms: r.latency_ms, inference_ms: r.inference_ms, hash: r.hash, agreed: r.agreed })),
    consensus: task.consensus,
    timing: {
      created_at: task.created_at,
      finished_at: task.finished_at,
      created_block: task.created_block,
      finished_block: task.finished_block,
      inference_ms: result.inference_ms,
    },
  };
}

export function streamChunk(
  meta: { sessionId: string; taskId: string; model: string; created: number },
  text: string,
  finish: { finish_reason: string; usage?: unknown } | null = null,
) {
  return {
    id: completionId(meta.sessionId, meta.taskId),
    object: "text_completion" as const,
    created: Math.floor(meta.created / 1000),
    model: meta.model,
    choices: [{ text, index: 0, finish_reason: finish?.finish_reason ?? null, logprobs: null }],
    task_id: meta.taskId,
    session_id: meta.sessionId,
    ...(finish?.usage ? { usage: finish.usage } : {}),
  };
}
