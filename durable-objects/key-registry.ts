import { DurableObject } from "cloudflare:workers";

// Managed API keys (workers/lib/keys.ts): one object for the whole router (`keyRegistry(env)` in stubs.ts). A
// key is a row of a few hundred bytes, the hot path reads it through a per-isolate cache, and only keys with a
// rate limit or a token budget reach this object per request (one `admit`, one `settle`), so a single object
// serves thousands of keys; one place also makes the admin's list of all keys and owners a plain query. Were it
// ever the bottleneck, key ids can carry a shard number without changing the key format's parsing.
//
// The object never sees key material: the Worker hashes the secret (SHA-256) and stores the digest here.

/** A key as the admin and its owner see it (no hash). Times are unix milliseconds. */
export interface KeyRecord {
  id: string;
  owner: string;
  name: string;
  /** The start of the key (`ek_<id>_` and four characters of its secret), to recognise it. */
  prefix: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  /** When its secret was last replaced. */
  rotated_at: number | null;
  /** Model names it may use; null: every model. */
  allowed_models: string[] | null;
  /** Requests per minute; null: no limit of its own. */
  rate_limit: number | null;
  /** Tokens (charged prompt + completion) it may use in all; null: no budget. */
  token_budget: number | null;
  tokens_used: number;
  /** The key that created it through self-service, null when the admin did. */
  created_by: string | null;
}

export interface StoredKey extends KeyRecord {
  /** Hex SHA-256 of the key's secret. */
  hash: string;
}

export type NewKey = Omit<StoredKey, "revoked_at" | "rotated_at" | "tokens_used">;

/** What the admin may change on a key (undefined: unchanged; null: lifted). */
export type KeyChanges = Partial<Pick<KeyRecord, "name" | "expires_at" | "allowed_models" | "rate_limit" | "token_budget">>;
const UPDATABLE = new Set(["name", "expires_at", "allowed_models", "rate_limit", "token_budget"]);

export type Refusal = { ok: false; code: "forbidden" | "not_found" | "invalid_request"; message: string };
export type Created = { ok: true; key: KeyRecord } | Refusal;

/** Who manages a key: its owner, and (self-service with a managed key) the calling key, which reaches itself and its descendants. */
export interface Manager {
  owner: string | null;
  caller: string | null;
}

export type Admission =
  | { ok: true; key: StoredKey; reservation: number | null }
  | { ok: false; code: "unauthorized"; message: string }
  | { ok: false; code: "rate_limited"; retry_after_s: number; limit: number }
  | { ok: false; code: "budget_exhausted"; token_budget: number; tokens_used: number; reserved: number };

/** A reservation a crashed request never settled stops counting after this (longer than any request may run). */
export const RESERVATION_TTL_MS = 15 * 60_000;
/** The rate limit window. */
export const RATE_WINDOW_MS = 60_000;
const LIST_MAX = 1000;

type Row = Omit<StoredKey, "allowed_models"> & { allowed_models: string | null };

function record(row: Row): StoredKey {
  return { ...row, allowed_models: row.allowed_models === null ? null : (JSON.parse(row.allowed_models) as string[]) };
}

const publicRecord = ({ hash: _hash, ...key }: StoredKey): KeyRecord => key;

/** The limits a child key may take from `parent`, moved out of the parent (never multiplied by making more keys). */
function carve(parent: StoredKey, child: NewKey, reserved: number): Refusal | { budget: number | null; rate: number | null } {
  const refuse = (message: string): Refusal => ({ ok: false, code: "forbidden", message });
  if (parent.allowed_models && !child.allowed_models?.every((m) => parent.allowed_models!.includes(m)))
    return refuse(`this key may use only ${parent.allowed_models.join(", ")}: allowed_models must be a subset`);
  if (parent.expires_at !== null && (child.expires_at === null || child.expires_at > parent.expires_at))
    return refuse("this key expires: a key it creates must expire no later");
  let budget: number | null = parent.token_budget;
  if (parent.token_budget !== null) {
    const left = parent.token_budget - parent.tokens_used - reserved;
    if (child.token_budget === null || child.token_budget > left)
      return refuse(`this key has a token budget: give the new key a token_budget of at most ${Math.max(0, left)} (moved from this key)`);
    budget = parent.token_budget - child.token_budget;
  }
  let rate: number | null = parent.rate_limit;
  if (parent.rate_limit !== null) {
    if (child.rate_limit === null || child.rate_limit > parent.rate_limit - 1)
      return refuse(`this key has a rate limit: give the new key a rate_limit of at most ${parent.rate_limit - 1} (moved from this key)`);
    rate = parent.rate_limit - child.rate_limit;
  }
  return { budget, rate };
}

export class KeyRegistry extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL,
      hash TEXT NOT NULL, prefix TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER,
      rotated_at INTEGER, allowed_models TEXT, rate_limit INTEGER, token_budget INTEGER,
      tokens_used INTEGER NOT NULL DEFAULT 0, created_by TEXT)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS keys_owner ON keys (owner, created_at)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL,
      tokens INTEGER NOT NULL, expires_at INTEGER NOT NULL)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS reservations_key ON reservations (key_id, expires_at)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS rate (key_id TEXT PRIMARY KEY, window INTEGER NOT NULL, count INTEGER NOT NULL)`);
  }

  private row(id: string): StoredKey | null {
    const row = this.sql.exec<Row>(`SELECT * FROM keys WHERE id = ?`, id).toArray()[0];
    return row ? record(row) : null;
  }

  private reserved(id: string, now: number): number {
    return this.sql
      .exec<{ n: number }>(`SELECT COALESCE(SUM(tokens), 0) AS n FROM reservations WHERE key_id = ? AND expires_at > ?`, id, now)
      .one().n;
  }

  /** Whether `manager` may see and change key `key` (a caller key reaches itself and the keys it made, transitively). */
  private manages(manager: Manager, key: StoredKey): boolean {
    if (manager.owner !== null && key.owner !== manager.owner) return false;
    if (manager.caller === null) return true;
    for (let k: StoredKey | null = key, hops = 0; k && hops < 64; hops++) {
      if (k.id === manager.caller) return true;
      k = k.created_by ? this.row(k.created_by) : null;
    }
    return false;
  }

  /** Stores a new key; made by `parent` (self-service), it takes its budget and rate out of the parent's. */
  create(key: NewKey, parent: string | null = null): Created {
    if (this.row(key.id)) return { ok: false, code: "invalid_request", message: "key id taken" };
    if (parent !== null) {
      const p = this.row(parent);
      if (!p || p.revoked_at !== null || p.owner !== key.owner) return { ok: false, code: "forbidden", message: "unknown creating key" };
      const limits = carve(p, key, this.reserved(p.id, Date.now()));
      if ("ok" in limits) return limits;
      this.sql.exec(`UPDATE keys SET token_budget = ?, rate_limit = ? WHERE id = ?`, limits.budget, limits.rate, p.id);
    }
    this.sql.exec(
      `INSERT INTO keys (id, owner, name, hash, prefix, created_at, expires_at, allowed_models, rate_limit, token_budget, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      key.id,
      key.owner,
      key.name,
      key.hash,
      key.prefix,
      key.created_at,
      key.expires_at,
      key.allowed_models === null ? null : JSON.stringify(key.allowed_models),
      key.rate_limit,
      key.token_budget,
      key.created_by,
    );
    return { ok: true, key: publicRecord(this.row(key.id)!) };
  }

  /** The key with its hash (the Worker's lookup), else null. */
  get(id: string): StoredKey | null {
    return this.row(id);
  }

  /** The keys `manager` reaches, newest first (an owner's, or every key for the admin). */
  list(manager: Manager): KeyRecord[] {
    const rows =
      manager.owner === null
        ? this.sql.exec<Row>(`SELECT * FROM keys ORDER BY created_at DESC LIMIT ?`, LIST_MAX)
        : this.sql.exec<Row>(`SELECT * FROM keys WHERE owner = ? ORDER BY created_at DESC LIMIT ?`, manager.owner, LIST_MAX);
    return rows.toArray().map(record).map(publicRecord);
  }

  /** One key `manager` reaches, else null. */
  find(id: string, manager: Manager): KeyRecord | null {
    const key = this.row(id);
    return key && this.manages(manager, key) ? publicRecord(key) : null;
  }

  /** A new secret for the key (same id and settings); the old one stops working. Null: not the manager's (or revoked). */
  rotate(id: string, hash: string, prefix: string, manager: Manager): KeyRecord | null {
    const key = this.row(id);
    if (!key || key.revoked_at !== null || !this.manages(manager, key)) return null;
    this.sql.exec(`UPDATE keys SET hash = ?, prefix = ?, rotated_at = ? WHERE id = ?`, hash, prefix, Date.now(), id);
    return publicRecord(this.row(id)!);
  }

  /** Changes a key's settings (the admin's: a budget raised, a limit lifted with null); null: no such key. */
  update(id: string, changes: KeyChanges): KeyRecord | null {
    if (!this.row(id)) return null;
    for (const [column, value] of Object.entries(changes)) {
      if (value === undefined || !UPDATABLE.has(column)) continue;
      const stored = column === "allowed_models" && value !== null ? JSON.stringify(value) : value;
      this.sql.exec(`UPDATE keys SET ${column} = ? WHERE id = ?`, stored as string | number | null, id);
    }
    return publicRecord(this.row(id)!);
  }

  /** Revokes the key (kept, for its usage and audit); null: not the manager's. */
  revoke(id: string, manager: Manager): KeyRecord | null {
    const key = this.row(id);
    if (!key || !this.manages(manager, key)) return null;
    if (key.revoked_at === null) this.sql.exec(`UPDATE keys SET revoked_at = ? WHERE id = ?`, Date.now(), id);
    return publicRecord(this.row(id)!);
  }

  /** Every owner that has a managed key. */
  owners(): string[] {
    return this.sql
      .exec<{ owner: string }>(`SELECT DISTINCT owner FROM keys ORDER BY owner`)
      .toArray()
      .map((r) => r.owner);
  }

  /**
   * One request of a key with a limit or a budget: counts it in the key's minute window (`count`) and, for work
   * under a budget, reserves `reserve` tokens. Refused while the tokens used and reserved reach the budget, so concurrent
   * requests overspend by at most the last admitted request's usage beyond its reservation.
   */
  admit(id: string, ask: { reserve: number | null; count: boolean }, now = Date.now()): Admission {
    const { reserve } = ask;
    const key = this.row(id);
    if (!key || key.revoked_at !== null) return { ok: false, code: "unauthorized", message: "API key revoked" };
    if (key.expires_at !== null && key.expires_at <= now) return { ok: false, code: "unauthorized", message: "API key expired" };
    if (key.rate_limit !== null && ask.count) {
      const window = Math.floor(now / RATE_WINDOW_MS);
      const row = this.sql.exec<{ window: number; count: number }>(`SELECT window, count FROM rate WHERE key_id = ?`, id).toArray()[0];
      const count = row?.window === window ? row.count : 0;
      if (count >= key.rate_limit) {
        return {
          ok: false,
          code: "rate_limited",
          retry_after_s: Math.ceil(((window + 1) * RATE_WINDOW_MS - now) / 1000),
          limit: key.rate_limit,
        };
      }
      this.sql.exec(`INSERT OR REPLACE INTO rate (key_id, window, count) VALUES (?, ?, ?)`, id, window, count + 1);
    }
    if (key.token_budget === null || reserve === null) return { ok: true, key, reservation: null };
    const reserved = this.reserved(id, now);
    if (key.tokens_used + reserved >= key.token_budget) {
      return { ok: false, code: "budget_exhausted", token_budget: key.token_budget, tokens_used: key.tokens_used, reserved };
    }
    this.sql.exec(`DELETE FROM reservations WHERE expires_at <= ?`, now);
    const r = this.sql
      .exec<{ id: number }>(
        `INSERT INTO reservations (key_id, tokens, expires_at) VALUES (?, ?, ?) RETURNING id`,
        id,
        reserve,
        now + RESERVATION_TTL_MS,
      )
      .one();
    return { ok: true, key, reservation: r.id };
  }

  /** Ends a request: releases its reservation and adds the tokens it was charged to the key's use. */
  settle(id: string, reservation: number | null, charged: number): void {
    if (reservation !== null) this.sql.exec(`DELETE FROM reservations WHERE id = ? AND key_id = ?`, reservation, id);
    if (charged > 0) this.sql.exec(`UPDATE keys SET tokens_used = tokens_used + ? WHERE id = ?`, Math.ceil(charged), id);
  }
}
