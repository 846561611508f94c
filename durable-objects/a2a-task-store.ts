import { DurableObject } from "cloudflare:workers";

// The A2A tasks of one API-key owner: one object per owner (`a2aTasks(env, owner)` in stubs.ts), so a tenant's
// tasks are bounded per tenant, and another owner's task id is simply absent here — GetTask and CancelTask answer
// it exactly as an unknown id. The Worker stores tasks as the SDK's proto JSON; this object only reads the few
// fields it indexes (id, context, state), so it knows nothing of A2A types.

/** Tasks kept per owner; past it the oldest finished ones go first (then the oldest of all). */
export const A2A_MAX_TASKS = 1000;
/** One task's JSON (history + artifacts), characters: well under a SQLite row's 2 MB. */
export const A2A_MAX_TASK_CHARS = 1_800_000;
/** How long a task is kept after its last change. */
export const A2A_TASK_TTL_MS = 24 * 3600 * 1000;
/** proto TaskState values that end a task: completed, failed, canceled, rejected. */
const TERMINAL = new Set([3, 4, 5, 7]);

export interface StoredTaskRow {
  id: string;
  context_id: string;
  /** proto TaskState number. */
  state: number;
  /** The task as proto JSON text. */
  json: string;
}

/**
 * What a save did. Refused: the stored task had already ended in another state (its JSON is returned), or the
 * task is past A2A_MAX_TASK_CHARS (`too_large`, its size).
 */
export type SaveOutcome = { saved: true } | { saved: false; state: number; json: string } | { saved: false; too_large: number };

export interface TaskListQuery {
  context_id?: string;
  state?: number;
  limit: number;
  /** `updated_at` and id of the last task of the previous page. */
  after?: { updated_at: number; id: string };
}

export class A2ATaskStore extends DurableObject<Env> {
  /** Whether an expiry alarm is known to be set (read once per life of the object, then kept). */
  private alarmArmed = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, context_id TEXT NOT NULL,
      state INTEGER NOT NULL, updated_at INTEGER NOT NULL, json TEXT NOT NULL)`);
    ctx.storage.sql.exec(`CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated_at)`);
    ctx.storage.sql.exec(`CREATE INDEX IF NOT EXISTS tasks_context ON tasks (context_id, updated_at)`);
  }

  load(id: string): string | null {
    const row = this.ctx.storage.sql.exec<{ json: string }>(`SELECT json FROM tasks WHERE id = ?`, id).toArray()[0];
    return row?.json ?? null;
  }

  /**
   * Writes a task. A task that has ended keeps its end state: a save in another state is refused (a CancelTask
   * from another isolate wins over the executor's later events, and a late event cannot revive a task).
   */
  async save(task: StoredTaskRow): Promise<SaveOutcome> {
    if (task.json.length > A2A_MAX_TASK_CHARS) return { saved: false, too_large: task.json.length };
    const sql = this.ctx.storage.sql;
    const prev = sql.exec<{ state: number; json: string }>(`SELECT state, json FROM tasks WHERE id = ?`, task.id).toArray()[0];
    if (prev && TERMINAL.has(prev.state) && prev.state !== task.state) return { saved: false, state: prev.state, json: prev.json };
    if (!prev) this.makeRoom();
    const now = Date.now();
    sql.exec(
      `INSERT INTO tasks (id, context_id, state, updated_at, json) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET context_id = excluded.context_id, state = excluded.state,
       updated_at = excluded.updated_at, json = excluded.json`,
      task.id,
      task.context_id,
      task.state,
      now,
      task.json,
    );
    if (!this.alarmArmed) {
      if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(now + A2A_TASK_TTL_MS);
      this.alarmArmed = true;
    }
    return { saved: true };
  }

  /** A page of tasks, newest change first. */
  list(q: TaskListQuery): { tasks: string[]; total: number; last: { updated_at: number; id: string } | null } {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.context_id) {
      where.push("context_id = ?");
      args.push(q.context_id);
    }
    if (q.state !== undefined) {
      where.push("state = ?");
      args.push(q.state);
    }
    const filter = where.length ? `WHERE ${where.join(" AND ")}` : "";
    const sql = this.ctx.storage.sql;
    const total = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM tasks ${filter}`, ...args).one().n;
    const page = q.after ? `${filter ? `${filter} AND` : "WHERE"} (updated_at < ? OR (updated_at = ? AND id < ?))` : filter;
    const pageArgs = q.after ? [...args, q.after.updated_at, q.after.updated_at, q.after.id] : args;
    const rows = sql
      .exec<{ id: string; updated_at: number; json: string }>(
        `SELECT id, updated_at, json FROM tasks ${page} ORDER BY updated_at DESC, id DESC LIMIT ?`,
        ...pageArgs,
        q.limit,
      )
      .toArray();
    const lastRow = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return { tasks: rows.map((r) => r.json), total, last: lastRow ? { updated_at: lastRow.updated_at, id: lastRow.id } : null };
  }

  /** Expired tasks go; the alarm comes back for the next one to expire. */
  override async alarm(): Promise<void> {
    const sql = this.ctx.storage.sql;
    sql.exec(`DELETE FROM tasks WHERE updated_at < ?`, Date.now() - A2A_TASK_TTL_MS);
    const next = sql.exec<{ at: number | null }>(`SELECT MIN(updated_at) AS at FROM tasks`).one().at;
    if (next !== null) await this.ctx.storage.setAlarm(next + A2A_TASK_TTL_MS);
    this.alarmArmed = next !== null;
  }

  /** Keeps the owner under A2A_MAX_TASKS before a new task: oldest finished first, else the oldest of all. */
  private makeRoom(): void {
    const sql = this.ctx.storage.sql;
    const count = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM tasks`).one().n;
    if (count < A2A_MAX_TASKS) return;
    const excess = count - A2A_MAX_TASKS + 1;
    const states = [...TERMINAL].join(", ");
    sql.exec(`DELETE FROM tasks WHERE id IN (SELECT id FROM tasks ORDER BY (state IN (${states})) DESC, updated_at ASC LIMIT ?)`, excess);
  }
}
