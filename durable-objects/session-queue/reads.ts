import type { Failure } from "../../shared/errors.ts";
import { parseTaskId } from "../../shared/task-id.ts";
import type { SessionConfig, SessionUsage, TaskView } from "../../shared/views.ts";
import { isShared, seesSession, seesTask, sessionNotFound, taskNotFound } from "../tenancy.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { TaskStore } from "./task-store.ts";

// What clients read of a session, every read through the ownership rule (durable-objects/tenancy.ts): another
// owner's session reads as unknown; on a shared session a caller's lists, counts and usage cover its own tasks.

/** What a session's reads look at. */
export interface ReadState {
  config: SessionConfig;
  store: TaskStore;
  open: OpenTasks;
  usedTokens: number;
  connectedMiners: string[];
}

export type Access = { ok: true; config: SessionConfig } | { ok: false; error: Failure };
export type TaskRead = { ok: true; task: TaskView } | { ok: false; error: Failure };

/**
 * The deposit and its use. Without a caller (the router's own bookkeeping) or on an owned session: the whole
 * session. On a shared session: the caller's own tasks, usage and reservations; `deposit` and `available` are
 * the shared budget every key draws on.
 */
export function usageFor(s: ReadState, caller?: string): SessionUsage {
  const { config, store, open } = s;
  const shared = { deposit: config.deposit, available: config.deposit - s.usedTokens - open.reservedTokens };
  const connected_miners = s.connectedMiners;
  if (caller === undefined || !isShared(config)) {
    return {
      ...shared,
      used: s.usedTokens,
      reserved: open.reservedTokens,
      tasks_total: store.countTasks(),
      tasks_open: open.size,
      connected_miners,
    };
  }
  const mine = open.list().filter((t) => t.owner === caller);
  return {
    ...shared,
    used: store.usedBy(caller),
    reserved: mine.reduce((sum, t) => sum + t.reservedTokens, 0),
    tasks_total: store.countTasks(caller),
    tasks_open: mine.length,
    connected_miners,
  };
}

/** The session's settings and usage as `caller` may see them (null: not its session); no caller: the router's own view. */
export function describeFor(s: ReadState, caller?: string): { config: SessionConfig; usage: SessionUsage } | null {
  if (caller !== undefined && !seesSession(s.config, caller)) return null;
  return { config: s.config, usage: usageFor(s, caller) };
}

/** Whether `caller` may use the session and, given `taskId`, see that task; 404 failures otherwise. */
export function accessFor(s: ReadState, caller: string, taskId?: string): Access {
  if (!seesSession(s.config, caller)) return { ok: false, error: sessionNotFound(s.config.id) };
  if (taskId === undefined) return { ok: true, config: s.config };
  // Only a canonical id names a task: "01" or "0x1" is nobody's task, whatever Number() would make of it.
  const id = parseTaskId(taskId);
  const row = id === null ? undefined : s.store.task(id);
  if (!row || !seesTask(s.config, row.owner, caller)) return { ok: false, error: taskNotFound(s.config.id, taskId) };
  return { ok: true, config: s.config };
}

/** One task as `caller` may see it. */
export function taskFor(s: ReadState, caller: string, taskId: string): TaskRead {
  const access = accessFor(s, caller, taskId);
  if (!access.ok) return access;
  const id = parseTaskId(taskId)!;
  return { ok: true, task: s.store.view(s.store.task(id)!, s.config, s.open.get(id), true) };
}

/** The newest tasks `caller` may see (all of an owned session; its own of a shared one); null: no such session. */
export function tasksFor(s: ReadState, caller: string, limit: number, before?: number): TaskView[] | null {
  if (!seesSession(s.config, caller)) return null;
  const rows = s.store.tasks(limit, before, isShared(s.config) ? caller : undefined);
  return rows.map((row) => s.store.view(row, s.config, s.open.get(row.id)));
}
