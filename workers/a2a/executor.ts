import type { AgentExecutor, ExecutionEventBus, RequestContext } from "@a2a-js/sdk/server";
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { callRest, sseData } from "../lib/rest-call.ts";
import { dataPart, type RouterError, type RouterTaskRef, TaskEvents, textPart } from "./events.ts";
import { type SkillCall, skillCall } from "./skills.ts";
import { type DurableTaskStore, isTerminal } from "./task-store.ts";

// Runs a skill as ONE REST request made as the caller (lib/rest-call.ts): auth, tenancy, validation, limits and
// error codes are the REST route's. A completion streams (`stream: true`): its tokens become artifact updates,
// and the router task id of its first chunk is recorded on the A2A task so that a CancelTask — which arrives in
// another request, maybe another isolate — can cancel the router task through the REST cancel route.

/** How long the isolate is kept after the execution returned, for the store to take its last events. */
const SETTLE_GRACE_MS = 10_000;

interface StreamChunk {
  task_id?: string;
  session_id?: string;
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: unknown;
  error?: RouterError;
}

/** The router's error from a REST answer that is not 2xx. */
export function restError(status: number, body: unknown): RouterError {
  const e = (body as { error?: Partial<RouterError> } | null)?.error;
  if (e && typeof e.code === "string") return { code: e.code, message: String(e.message ?? ""), details: e.details ?? null };
  return { code: "internal_error", message: `the router answered ${status}`, details: null };
}

/** Cancels a router task as the caller (the REST route checks the owner). */
export function cancelRouterTask(c: Context<AppEnv>, ref: RouterTaskRef): Promise<Response> {
  const path = `/api/v1/tasks/${encodeURIComponent(ref.session_id)}/${encodeURIComponent(ref.task_id)}/cancel`;
  return callRest(c, { method: "POST", path });
}

export class RouterExecutor implements AgentExecutor {
  private readonly c: Context<AppEnv>;
  private readonly store: DurableTaskStore;

  constructor(c: Context<AppEnv>, store: DurableTaskStore) {
    this.c = c;
    this.store = store;
  }

  execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    // Every execution is a new task (follow-up messages are refused: request-handler.ts), its id the SDK's fresh one.
    this.store.created(rc.taskId);
    const run = this.run(rc, bus);
    // A non-blocking send answers before the task ends: the isolate stays until the store has its end state.
    const ended = new Promise<void>((resolve) => this.store.whenEnded(rc.taskId, resolve));
    const grace = () => new Promise<void>((resolve) => setTimeout(resolve, SETTLE_GRACE_MS));
    this.c.executionCtx.waitUntil(Promise.race([ended, run.then(grace, grace)]));
    return run;
  }

  /** Only reached when the cancel lands in the request running the task; CancelTask elsewhere goes through the store. */
  async cancelTask(taskId: string, bus: ExecutionEventBus): Promise<void> {
    const task = await this.store.load(taskId);
    new TaskEvents(taskId, task?.contextId ?? "", bus).canceled();
  }

  private async run(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const call = skillCall(rc.userMessage, rc.request.metadata);
    const events = new TaskEvents(rc.taskId, rc.contextId, bus);
    events.submitted(rc.userMessage, { skill: call.skill, version: call.version });
    events.working();
    if (call.skill === "completion") await this.completion(call, events);
    else await this.work(call, events);
  }

  /** delegate, validate, factcheck: one JSON answer, kept whole as the task's artifact. */
  private async work(call: SkillCall, events: TaskEvents): Promise<void> {
    const res = await callRest(this.c, { method: "POST", path: call.path, body: call.body });
    const body = (await res.json().catch(() => null)) as Record<string, unknown> | null;
    if (!res.ok) return events.failed(restError(res.status, body));
    // A CancelTask may have come while the work ran (its router work is not cancellable): the cancel stands.
    const stored = await this.store.stored(events.taskId);
    if (isTerminal(stored)) return events.endedAs(stored);
    const output = typeof body?.output === "string" ? [textPart(body.output)] : [];
    events.result([...output, dataPart(body)], { route: call.path });
  }

  private async completion(call: SkillCall, events: TaskEvents): Promise<void> {
    const res = await callRest(this.c, { method: "POST", path: call.path, body: { ...call.body, stream: true } });
    if (!res.ok) return events.failed(restError(res.status, await res.json().catch(() => null)));
    let ref: RouterTaskRef | null = null;
    let stopped = false;
    let running = true;
    // The task ended elsewhere (a CancelTask; or GetTask's reconcile once the router task closed): stop reading,
    // and cancel the router task if it still runs (a cancel that came before its id was known).
    this.store.whenEnded(events.taskId, () => {
      if (!running) return;
      stopped = true;
      if (ref) void cancelRouterTask(this.c, ref).catch(() => {});
    });
    let text = "";
    let last: StreamChunk | null = null;
    let error: RouterError | null = null;
    for await (const raw of sseData(res)) {
      const chunk = raw as StreamChunk;
      if (chunk.error) {
        error = chunk.error;
        break;
      }
      if (!ref && chunk.task_id && chunk.session_id) {
        ref = { session_id: chunk.session_id, task_id: chunk.task_id };
        events.working({ router_task: ref });
        if (stopped) void cancelRouterTask(this.c, ref).catch(() => {});
      }
      const choice = chunk.choices?.[0];
      if (choice?.text) {
        text += choice.text;
        events.token(choice.text);
      }
      if (choice?.finish_reason) last = chunk;
      if (stopped) break;
    }
    running = false;
    if (stopped) return events.endedAs(await this.store.stored(events.taskId));
    if (error?.code === "task_cancelled") return events.canceled();
    if (error) return events.failed(error);
    if (!last) return events.failed({ code: "internal_error", message: "the completion stream ended without a result" });
    events.result([textPart(text)], {
      task_id: last.task_id,
      session_id: last.session_id,
      finish_reason: last.choices?.[0]?.finish_reason,
      usage: last.usage ?? null,
    });
  }
}
