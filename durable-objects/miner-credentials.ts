import type { ModelContext } from "../shared/api.ts";

// The registry side of miner credentials, on the NodePool's SQLite: each miner's token epoch (bumped by every
// registration and by an explicit revoke, so only the newest token connects) and the model contexts it declared
// (what a session uses to refuse a prompt that cannot fit). The router signs tokens; the pool decides whether
// one is still current.

/** What the pool tells a SessionQueue about a miner asking to join it. */
export interface SessionJoin {
  /** The token's epoch is the miner's current one (false: revoked by a newer registration or a revoke). */
  current: boolean;
  /** The pool assigned this miner to the session. */
  assigned: boolean;
  /** Every miner the pool assigns to the session now. */
  members: string[];
  /** The miner's declared model contexts. */
  contexts: ModelContext[] | null;
}

/**
 * The pool's answer to a join: the token is current, and the pool assigned the miner to the session. A current
 * token's join is recorded (the session may accept it to finish work it holds there, assigned or not), so a
 * revoke reaches every session where the miner may hold a channel.
 */
export function joinAnswer(sql: SqlStorage, sessionId: string, address: string, epoch: number): SessionJoin {
  const members = sql
    .exec<{ miner: string }>(`SELECT miner FROM assignments WHERE session_id = ?`, sessionId)
    .toArray()
    .map((r) => r.miner);
  const current = epochIsCurrent(sql, address, epoch);
  if (current) sql.exec(`INSERT OR IGNORE INTO miner_channels (miner, session_id) VALUES (?, ?)`, address, sessionId);
  return { current, assigned: members.includes(address), members, contexts: contextsOf(sql, address) };
}

/** Every session where the miner is assigned or has asked to join since its last revoke; forgets the joins. */
export function channelSessions(sql: SqlStorage, address: string): string[] {
  const rows = sql.exec<{ session_id: string }>(
    `SELECT session_id FROM assignments WHERE miner = ? UNION SELECT session_id FROM miner_channels WHERE miner = ?`,
    address,
    address,
  );
  const sessions = rows.toArray().map((r) => r.session_id);
  sql.exec(`DELETE FROM miner_channels WHERE miner = ?`, address);
  return sessions;
}

/** Starts the miner's next token generation; every older token stops connecting. Returns the new epoch. */
export function bumpEpoch(sql: SqlStorage, address: string): number {
  const row = sql
    .exec<{ token_epoch: number }>(`UPDATE miners SET token_epoch = token_epoch + 1 WHERE address = ? RETURNING token_epoch`, address)
    .toArray()[0];
  return row?.token_epoch ?? 0;
}

/** Whether a token of this epoch is the miner's current one (an unknown miner has none). */
export function epochIsCurrent(sql: SqlStorage, address: string, epoch: number): boolean {
  const row = sql.exec<{ token_epoch: number }>(`SELECT token_epoch FROM miners WHERE address = ?`, address).toArray()[0];
  return row !== undefined && row.token_epoch === epoch;
}

export function saveContexts(sql: SqlStorage, address: string, contexts: ModelContext[] | undefined): void {
  sql.exec(`UPDATE miners SET contexts = ? WHERE address = ?`, contexts?.length ? JSON.stringify(contexts) : null, address);
}

export function contextsOf(sql: SqlStorage, address: string): ModelContext[] | null {
  const row = sql.exec<{ contexts: string | null }>(`SELECT contexts FROM miners WHERE address = ?`, address).toArray()[0];
  return row?.contexts ? (JSON.parse(row.contexts) as ModelContext[]) : null;
}

/** The context a miner declared for one model, or null when it declared none. */
export function contextFor(contexts: readonly ModelContext[] | null | undefined, model: string): ModelContext | null {
  return contexts?.find((c) => c.model === model) ?? null;
}
