import { type ListTasksRequest, type ListTasksResponse, Task, TaskState } from "@a2a-js/sdk";
import { RequestMalformedError } from "@a2a-js/sdk/errors";
import type { ServerCallContext, TaskStore } from "@a2a-js/sdk/server";
import { a2aTasks } from "../../durable-objects/stubs.ts";

// The SDK's TaskStore over the owner's A2ATaskStore object (durable-objects/a2a-task-store.ts). One instance per
// request, bound to the authenticated owner: the SDK's `context` cannot pick another tenant's object. Tasks travel
// as the SDK's proto JSON. What this request wrote last is kept, so the SDK's load-merge-save on every event
// costs one round trip, not two; a task changed elsewhere (a CancelTask from another isolate) is seen when the
// object refuses a save, and `whenEnded` listeners learn of it.

export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set([
  TaskState.TASK_STATE_COMPLETED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_CANCELED,
  TaskState.TASK_STATE_REJECTED,
]);

export const isTerminal = (task: Task | undefined) => task?.status?.state !== undefined && TERMINAL_STATES.has(task.status.state);

const parse = (json: string): Task => Task.fromJSON(JSON.parse(json));

/** A ListTasks page token: the last task of the previous page. */
function pageCursor(token: string): { updated_at: number; id: string } {
  try {
    const c = JSON.parse(atob(token)) as { updated_at: unknown; id: unknown };
    if (typeof c.updated_at === "number" && typeof c.id === "string") return { updated_at: c.updated_at, id: c.id };
  } catch {}
  throw new RequestMalformedError("pageToken is not one this agent issued");
}

export class DurableTaskStore implements TaskStore {
  private readonly stub: ReturnType<typeof a2aTasks>;
  /** What this request last wrote (or found ended), per task. */
  private readonly written = new Map<string, Task>();
  /** The newest snapshot of each task not yet in the object. */
  private readonly pending = new Map<string, Task>();
  private flushing: Promise<void> | null = null;
  private readonly ended = new Map<string, (() => void)[]>();

  constructor(env: Env, owner: string) {
    this.stub = a2aTasks(env, owner);
  }

  /** Tasks this request creates (fresh ids): nothing to read for them until they are written. */
  private readonly fresh = new Set<string>();

  created(taskId: string): void {
    this.fresh.add(taskId);
  }

  async load(taskId: string, _context?: ServerCallContext): Promise<Task | undefined> {
    const mine = this.written.get(taskId);
    if (mine) return structuredClone(mine);
    if (this.fresh.has(taskId)) return undefined;
    const json = await this.stub.load(taskId);
    return json === null ? undefined : parse(json);
  }

  /** The task as the object holds it now (another isolate may have ended it), bypassing what this request wrote. */
  async stored(taskId: string): Promise<Task | undefined> {
    const json = await this.stub.load(taskId);
    return json === null ? undefined : parse(json);
  }

  /**
   * Written behind: the SDK saves the whole task on every event (each token of a stream), so snapshots queue
   * here and one write carries the newest — every event reaches the store, several per round trip when they
   * come fast. An end state is awaited: once the SDK answers a finished task, every isolate reads it.
   */
  async save(task: Task, _context?: ServerCallContext): Promise<void> {
    this.written.set(task.id, structuredClone(task));
    this.pending.set(task.id, structuredClone(task));
    this.flushing ??= this.drain();
    if (isTerminal(task)) await this.flushing;
  }

  /** Writes until nothing is pending; `flushing` is cleared in the same step that finds nothing left. */
  private async drain(): Promise<void> {
    try {
      for (let next = this.pending.entries().next(); !next.done; next = this.pending.entries().next()) {
        const [id, task] = next.value;
        this.pending.delete(id);
        await this.write(id, task);
      }
    } finally {
      this.flushing = null;
    }
  }

  private async write(id: string, task: Task): Promise<void> {
    const outcome = await this.stub
      .save({
        id,
        context_id: task.contextId,
        state: task.status?.state ?? TaskState.TASK_STATE_UNSPECIFIED,
        json: JSON.stringify(Task.toJSON(task)),
      })
      .catch((err: unknown) => {
        console.error(`A2A task ${id} not stored`, err);
        return null;
      });
    if (!outcome) return;
    if (outcome.saved) {
      if (isTerminal(task)) this.fire(id);
      return;
    }
    if ("too_large" in outcome) {
      // The task stays as last stored (the executor bounds what it writes; a huge message could still get here).
      console.error(`A2A task ${id} not stored: ${outcome.too_large} characters`);
      return;
    }
    // The task ended elsewhere: what is stored stands, and whoever runs it here stops.
    this.pending.delete(id);
    this.written.set(id, parse(outcome.json));
    this.fire(id);
  }

  async list(params: ListTasksRequest, _context?: ServerCallContext): Promise<ListTasksResponse> {
    const limit = params.pageSize ?? 50;
    const after = params.pageToken ? pageCursor(params.pageToken) : undefined;
    const state = params.status || undefined; // 0 is TASK_STATE_UNSPECIFIED: no filter
    const page = await this.stub.list({ context_id: params.contextId || undefined, state, limit, after });
    const tasks = page.tasks.map(parse).map((t) => (params.includeArtifacts ? t : { ...t, artifacts: [] }));
    return {
      tasks,
      nextPageToken: page.last ? btoa(JSON.stringify(page.last)) : "",
      pageSize: limit,
      totalSize: page.total,
    };
  }

  /** Calls `fn` once the task has ended in the store: saved here in an end state, or found ended elsewhere. */
  whenEnded(taskId: string, fn: () => void): void {
    const fns = this.ended.get(taskId) ?? [];
    fns.push(fn);
    this.ended.set(taskId, fns);
  }

  private fire(taskId: string): void {
    const fns = this.ended.get(taskId) ?? [];
    this.ended.delete(taskId);
    for (const fn of fns) fn();
  }
}
