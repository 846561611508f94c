import { type Message, type Part, Role, type Task, TaskState } from "@a2a-js/sdk";
import { AgentEvent, type ExecutionEventBus } from "@a2a-js/sdk/server";

// The events one A2A task publishes, in the SDK's 1.0 (proto-shaped) types: parts are `{content: {$case, value}}`,
// states are TaskState numbers. The SDK persists each through the task store and streams it to the client.

export const textPart = (value: string): Part => ({
  content: { $case: "text", value },
  mediaType: "text/plain",
  filename: "",
  metadata: {},
});
export const dataPart = (value: unknown): Part => ({
  content: { $case: "data", value },
  mediaType: "application/json",
  filename: "",
  metadata: {},
});

/** The router task behind an A2A task (CancelTask cancels it through the REST route). */
export interface RouterTaskRef {
  session_id: string;
  task_id: string;
}

/** The router's error, as REST answered it. */
export interface RouterError {
  code: string;
  message: string;
  details?: unknown;
}

/** The router task an A2A task recorded in its metadata, if any. */
export function routerTaskOf(task: Task | undefined): RouterTaskRef | null {
  const ref = task?.metadata?.router_task as Partial<RouterTaskRef> | undefined;
  return typeof ref?.session_id === "string" && typeof ref.task_id === "string"
    ? { session_id: ref.session_id, task_id: ref.task_id }
    : null;
}

/** A message from the agent within a task. */
export function agentMessage(taskId: string, contextId: string, parts: Part[]): Message {
  return {
    messageId: crypto.randomUUID(),
    contextId,
    taskId,
    role: Role.ROLE_AGENT,
    parts,
    metadata: {},
    extensions: [],
    referenceTaskIds: [],
  };
}

/** The status message and task metadata of a task that failed with the router's error. */
export const failure = (error: RouterError) => ({
  parts: [textPart(`${error.code}: ${error.message}`), dataPart({ error })],
  metadata: { error },
});

/** The same for a cancelled task. */
export const cancellation = () => failure({ code: "task_cancelled", message: "the task was cancelled" });

/** Publishes one task's events on its bus. */
export class TaskEvents {
  private artifactStarted = false;
  readonly taskId: string;
  readonly contextId: string;
  private readonly bus: ExecutionEventBus;

  constructor(taskId: string, contextId: string, bus: ExecutionEventBus) {
    this.taskId = taskId;
    this.contextId = contextId;
    this.bus = bus;
  }

  private status(state: TaskState, parts: Part[] | null, metadata: Record<string, unknown> = {}): void {
    this.bus.publish(
      AgentEvent.statusUpdate({
        taskId: this.taskId,
        contextId: this.contextId,
        status: {
          state,
          message: parts ? agentMessage(this.taskId, this.contextId, parts) : undefined,
          timestamp: new Date().toISOString(),
        },
        metadata,
      }),
    );
  }

  /** The first event of every execution (the SDK requires a task first). */
  submitted(userMessage: Message, metadata: Record<string, unknown>): void {
    this.bus.publish(
      AgentEvent.task({
        id: this.taskId,
        contextId: this.contextId,
        status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: new Date().toISOString() },
        artifacts: [],
        history: [userMessage],
        metadata,
      }),
    );
  }

  working(metadata: Record<string, unknown> = {}): void {
    this.status(TaskState.TASK_STATE_WORKING, null, metadata);
  }

  /** A piece of the answer as it streams: the artifact grows by one text part. */
  token(text: string): void {
    this.artifact([textPart(text)], this.artifactStarted, false);
    this.artifactStarted = true;
  }

  /** The whole answer, replacing the streamed pieces with one artifact. */
  result(parts: Part[], metadata: Record<string, unknown>): void {
    this.artifact(parts, false, true, metadata);
    this.status(TaskState.TASK_STATE_COMPLETED, null);
  }

  failed(error: RouterError): void {
    const f = failure(error);
    this.status(TaskState.TASK_STATE_FAILED, f.parts, f.metadata);
  }

  /** The end another request stored (a CancelTask, GetTask's reconcile), repeated so this stream ends the same way. */
  endedAs(stored: Task | undefined): void {
    if (!stored?.status) return this.canceled();
    this.bus.publish(AgentEvent.statusUpdate({ taskId: this.taskId, contextId: this.contextId, status: stored.status, metadata: {} }));
  }

  canceled(): void {
    const f = cancellation();
    this.status(TaskState.TASK_STATE_CANCELED, f.parts, f.metadata);
  }

  private artifact(parts: Part[], append: boolean, lastChunk: boolean, metadata: Record<string, unknown> = {}): void {
    this.bus.publish(
      AgentEvent.artifactUpdate({
        taskId: this.taskId,
        contextId: this.contextId,
        artifact: { artifactId: "result", name: "result", description: "", parts, metadata, extensions: [] },
        append,
        lastChunk,
        metadata: {},
      }),
    );
  }
}
