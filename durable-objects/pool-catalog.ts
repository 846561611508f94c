import type { Failure } from "../shared/errors.ts";
import type { SessionConfig } from "../shared/views.ts";
import type { CatalogSession } from "./pool-assignment.ts";
import { SHARED_OWNER } from "./tenancy.ts";

// The session catalog on the NodePool's SQLite: which sessions exist, whose they are, how many miners each has.
// An owner has at most MAX_SESSIONS_PER_OWNER sessions (sessions are never deleted; shared ones count against
// nobody). The router claims an id here first — one step in this single-threaded object, so concurrent creates
// cannot all slip under the quota — then creates the session's queue, then adds it (or drops the claim).
// Listings page newest first by a cursor (`before`: the last id of the previous page) and read each session's
// miner count from its row, which the rebalance keeps current.

export const DEFAULT_MAX_SESSIONS_PER_OWNER = 100;
/** A claim whose session never arrived (the router failed between the steps) stops counting after this. */
const CLAIM_TTL_MS = 60_000;

/** MAX_SESSIONS_PER_OWNER when it is a whole number ≥ 0, else 100. */
export function sessionQuota(env: Pick<Env, "MAX_SESSIONS_PER_OWNER">): number {
  const n = Number(env.MAX_SESSIONS_PER_OWNER);
  return env.MAX_SESSIONS_PER_OWNER && Number.isInteger(n) && n >= 0 ? n : DEFAULT_MAX_SESSIONS_PER_OWNER;
}

export interface SessionSummary {
  id: string;
  name: string;
  active: boolean;
  owner: string;
  model: string;
  mode: SessionConfig["mode"];
  redundancy: number;
  miners_count: number;
  created_at: number;
  updated_at: number;
}

interface SessionRow extends Record<string, SqlStorageValue> {
  id: string;
  config: string;
  active: number;
  owner: string;
  miners: number;
  created_at: number;
  updated_at: number;
}

/** Reserves `id` for `owner` unless it exists or the owner is at its quota. */
export function claimSession(sql: SqlStorage, id: string, owner: string, quota: number, now: number): Failure | null {
  sql.exec(`DELETE FROM session_claims WHERE at < ?`, now - CLAIM_TTL_MS);
  const taken = sql.exec(`SELECT 1 FROM sessions WHERE id = ? UNION ALL SELECT 1 FROM session_claims WHERE id = ?`, id, id).toArray();
  if (taken.length > 0) return { code: "session_exists", message: `session ${id} exists` };
  if (owner !== SHARED_OWNER) {
    const count = (table: string) => sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE owner = ?`, owner).one().n;
    const held = count("sessions") + count("session_claims");
    if (held >= quota) {
      return {
        code: "session_quota_exceeded",
        message: `this API key owns ${held} sessions, the most it may (MAX_SESSIONS_PER_OWNER = ${quota}); use one of them`,
        details: { sessions: held, max_sessions: quota },
      };
    }
  }
  sql.exec(`INSERT INTO session_claims (id, owner, at) VALUES (?, ?, ?)`, id, owner, now);
  return null;
}

export function releaseClaim(sql: SqlStorage, id: string): void {
  sql.exec(`DELETE FROM session_claims WHERE id = ?`, id);
}

/** Adds a session (a no-op when it exists) and drops its claim. */
export function insertSession(sql: SqlStorage, config: SessionConfig, now: number): void {
  sql.exec(
    `INSERT OR IGNORE INTO sessions (id, config, active, owner, created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?)`,
    config.id,
    JSON.stringify(config),
    config.owner,
    now,
    now,
  );
  releaseClaim(sql, config.id);
}

function summary(row: SessionRow): SessionSummary {
  const cfg = JSON.parse(row.config) as SessionConfig;
  return {
    id: row.id,
    name: cfg.name,
    active: row.active === 1,
    owner: cfg.owner,
    model: cfg.model,
    mode: cfg.mode,
    redundancy: cfg.redundancy,
    miners_count: row.miners,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

export function sessionSummary(sql: SqlStorage, id: string): SessionSummary | null {
  const row = sql.exec<SessionRow>(`SELECT * FROM sessions WHERE id = ?`, id).toArray()[0];
  return row ? summary(row) : null;
}

/**
 * One page of the sessions `caller` sees (its own and the shared ones), newest first, after the session
 * `before`; a `before` the caller does not see reads as the end (an empty page), so it reveals nothing.
 */
export function sessionPage(
  sql: SqlStorage,
  caller: string,
  limit: number,
  before?: string,
): { sessions: SessionSummary[]; next_before: string | null } {
  const visible = `(owner = ? OR owner = '${SHARED_OWNER}')`;
  const rows = before
    ? sql.exec<SessionRow>(
        `SELECT * FROM sessions WHERE ${visible} AND rowid < (SELECT rowid FROM sessions WHERE id = ? AND ${visible})
         ORDER BY rowid DESC LIMIT ?`,
        caller,
        before,
        caller,
        limit + 1,
      )
    : sql.exec<SessionRow>(`SELECT * FROM sessions WHERE ${visible} ORDER BY rowid DESC LIMIT ?`, caller, limit + 1);
  const page = rows.toArray();
  const more = page.length > limit;
  const sessions = page.slice(0, limit).map(summary);
  return { sessions, next_before: more ? sessions[sessions.length - 1].id : null };
}

export function catalogCounts(sql: SqlStorage): { total: number; active: number } {
  return sql.exec<{ total: number; active: number }>(`SELECT COUNT(*) AS total, COALESCE(SUM(active), 0) AS active FROM sessions`).one();
}

/** The active sessions as assignment reads them. */
export function activeSessions(sql: SqlStorage): CatalogSession[] {
  return sql
    .exec<SessionRow>(`SELECT config FROM sessions WHERE active = 1`)
    .toArray()
    .map((r) => JSON.parse(r.config) as SessionConfig);
}

/** Records each changed session's miner count (the summaries read it) and when it changed. */
export function setMinerCounts(sql: SqlStorage, counts: ReadonlyMap<string, number>, now: number): void {
  for (const [id, n] of counts) sql.exec(`UPDATE sessions SET miners = ?, updated_at = ? WHERE id = ?`, n, now, id);
}
