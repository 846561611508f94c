import type { AgentCard, CancelTaskRequest, GetTaskRequest, SendMessageRequest, StreamResponse, Task } from "@a2a-js/sdk";
import { TaskNotCancelableError, UnsupportedOperationError } from "@a2a-js/sdk/errors";
import { DefaultRequestHandler, type ServerCallContext } from "@a2a-js/sdk/server";
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { routerTaskOf } from "./events.ts";
import { cancelRouterTask, RouterExecutor } from "./executor.ts";
import { reconcile } from "./reconcile.ts";
import { skillCall } from "./skills.ts";
import { type DurableTaskStore, isTerminal } from "./task-store.ts";

// The SDK's request handler, built per request (its event buses live in memory, and a request's buses are its
// own: GetTask and CancelTask always go through the durable store, whichever isolate ran the task). Two
// additions: a message is checked against its skill's REST schema before any task exists (invalid params, not a
// failed task), and CancelTask cancels the router task behind a running completion through the REST route.

export class RouterRequestHandler extends DefaultRequestHandler {
  private readonly store: DurableTaskStore;
  private readonly c: Context<AppEnv>;

  constructor(card: AgentCard, store: DurableTaskStore, c: Context<AppEnv>) {
    super(card, store, new RouterExecutor(c, store));
    this.store = store;
    this.c = c;
  }

  override sendMessage(params: SendMessageRequest, context: ServerCallContext) {
    this.check(params);
    return super.sendMessage(params, context);
  }

  override async *sendMessageStream(
    params: SendMessageRequest,
    context: ServerCallContext,
  ): AsyncGenerator<StreamResponse, void, undefined> {
    this.check(params);
    yield* super.sendMessageStream(params, context);
  }

  /** A running completion whose executor is gone still ends (reconcile.ts); then the SDK answers as usual. */
  override async getTask(params: GetTaskRequest, context: ServerCallContext): Promise<Task> {
    const task = params.id ? await this.store.load(params.id, context) : undefined;
    if (task) await reconcile(this.c, this.store, task);
    return super.getTask(params, context);
  }

  override async cancelTask(params: CancelTaskRequest, context: ServerCallContext): Promise<Task> {
    const task = await this.store.load(params.id, context);
    const ref = routerTaskOf(task);
    if (task && ref && !isTerminal(task)) {
      const res = await cancelRouterTask(this.c, ref);
      // The router task finished first: the A2A task is about to end with its answer.
      if (res.status === 409) throw new TaskNotCancelableError(`task ${params.id} has finished`);
    }
    // Marks the task canceled in the store; the executor, wherever it runs, sees that at its next event.
    return super.cancelTask(params, context);
  }

  private check(params: SendMessageRequest): void {
    // Every task of this agent ends with its one answer: a follow-up starts a new task (same contextId).
    if (params.message?.taskId) throw new UnsupportedOperationError("tasks take no follow-up messages: send a new message");
    skillCall(params.message, params.metadata);
  }
}
