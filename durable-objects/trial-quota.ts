import { DurableObject } from "cloudflare:workers";

// One client IP bucket's trial requests (`trialQuota(env, bucket)` in stubs.ts): the times of the requests
// still inside the sliding window, in SQLite, so a quota survives eviction and router restarts.

export type Taken = { ok: true; at: number; remaining: number } | { ok: false; retry_after_s: number };

export class TrialQuota extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS taken (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL)");
  }

  /**
   * Takes one request of `limit` per `windowMs` at `now`, or says in how many seconds the oldest request in the
   * window leaves it. Requests that left the window are deleted first.
   */
  take(limit: number, windowMs: number, now: number = Date.now()): Taken {
    this.sql.exec("DELETE FROM taken WHERE at <= ?", now - windowMs);
    const rows = this.sql.exec<{ at: number }>("SELECT at FROM taken ORDER BY at ASC, id ASC").toArray();
    if (rows.length >= limit) {
      // The (rows.length - limit + 1)-th oldest must leave before one more fits; at least 1 s.
      const leaves = rows[rows.length - limit].at + windowMs;
      return { ok: false, retry_after_s: Math.max(1, Math.ceil((leaves - now) / 1000)) };
    }
    this.sql.exec("INSERT INTO taken (at) VALUES (?)", now);
    return { ok: true, at: now, remaining: limit - rows.length - 1 };
  }

  /** Gives back a request taken at `at` (one refused at validation, which did no work). */
  refund(at: number): void {
    this.sql.exec("DELETE FROM taken WHERE id = (SELECT id FROM taken WHERE at = ? ORDER BY id DESC LIMIT 1)", at);
  }

  /** The times in the window, oldest first (tests, diagnostics). */
  inWindow(windowMs: number, now: number = Date.now()): number[] {
    return this.sql
      .exec<{ at: number }>("SELECT at FROM taken WHERE at > ? ORDER BY at ASC", now - windowMs)
      .toArray()
      .map((r) => r.at);
  }
}
