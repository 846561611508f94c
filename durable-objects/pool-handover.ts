import type { Failure } from "../shared/errors.ts";
import { poolShardsFrom } from "../shared/pool-shard.ts";
import { bumpEpoch } from "./miner-credentials.ts";
import { DIRECTORY, poolShards, shardName, shardOf } from "./pool-shards.ts";

// Changing POOL_SHARDS moves most miners to another shard. While POOL_SHARDS_FROM names the previous count, a
// shard that meets a miner it does not know (at its registration, or in a batch of outcomes) pulls the miner's
// state from its old shard, lazily, one miner at a time, in two phases:
//   1. export (old shard): checks that it is the address's shard under POOL_SHARDS_FROM and that the asker is
//      its shard under POOL_SHARDS, marks the miner moved (handover_out) and bumps its token epoch (its sockets
//      and tokens there stop working), and answers its miners row, faucet grants, channels and ledger pages
//      without deleting anything. Asked again (the new shard crashed), it answers the same state.
//   2. import (new shard): ledger pages, then the miners row with the rest and a handover_in note in one
//      transaction: the miners row is the commit point (a crash before it leaves ledger rows without a miner,
//      which the next try deletes first). Then confirm (old shard): it asks the new shard whether it holds the
//      miner (handover_in) before it deletes its copy, so no confirm can delete state that did not arrive.
// A miner with slashes on their way to the chain (ledger status pending or submitted) is not exported: its old
// shard sends and follows those transactions to the end, and the miner's registration is answered 409 with a
// retry hint meanwhile. Moving a signed, possibly in-flight batch row would let two shards each send a slash.

/** Ledger rows per export call: a long-lived miner's ledger crosses in pages, not one huge message. */
const PAGE = 500;
/** How long the operator's count of miners left in old shards is reused (it hashes every address). */
const LEFT_TTL_MS = 30_000;
/** Unconfirmed handovers older than this are confirmed again at the next registration. */
const CONFIRM_RETRY_MS = 10_000;

type Row = Record<string, SqlStorageValue>;

export interface MinerState {
  /** The miners row as stored: registration, stake figure, reputation counters, contexts, token epoch. */
  miner: Row;
  faucet: number[];
  channels: string[];
}

export type ExportAnswer = { ok: true; state: MinerState | null; ledger: Row[]; more: boolean } | { ok: false; error: Failure };

const TABLES = [
  `CREATE TABLE IF NOT EXISTS handover_out (address TEXT PRIMARY KEY, to_shard TEXT NOT NULL, at INTEGER NOT NULL,
     done INTEGER NOT NULL DEFAULT 0)`,
  `CREATE TABLE IF NOT EXISTS handover_in (address TEXT PRIMARY KEY, from_shard TEXT NOT NULL, at INTEGER NOT NULL,
     confirmed INTEGER NOT NULL DEFAULT 0)`,
];

const ADDRESS = /^0x[0-9a-f]{40}$/;
const refuse = (message: string): { ok: false; error: Failure } => ({ ok: false, error: { code: "forbidden", message } });
/** The object that holds `address` with `shards` shards. */
export const homeOf = (address: string, shards: number) => shardName(shardOf(address, shards), shards);

export class PoolHandover {
  private readonly ctx: DurableObjectState;
  private readonly env: Env;
  private readonly sql: SqlStorage;
  private ready = false;
  private readonly pulling = new Map<string, Promise<Failure | null>>();
  private leftCache: { at: number; left: number } | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    this.ctx = ctx;
    this.env = env;
    this.sql = ctx.storage.sql;
  }

  /** The new and previous shard counts while a handover is in progress, else null. */
  private layout(): { to: number; from: number } | null {
    const from = poolShardsFrom(this.env);
    return from === null ? null : { to: poolShards(this.env), from };
  }

  private is(name: string): boolean {
    return this.ctx.id.equals(this.env.NODE_POOL.idFromName(name));
  }

  private stub(name: string) {
    return this.env.NODE_POOL.get(this.env.NODE_POOL.idFromName(name));
  }

  private tables(): void {
    if (this.ready) return;
    for (const t of TABLES) this.sql.exec(t);
    this.ready = true;
  }

  private known(address: string): boolean {
    return this.sql.exec(`SELECT 1 FROM miners WHERE address = ?`, address).toArray().length > 0;
  }

  // ── the new shard's side ─────────────────────────────────────────────────────────────────────────────

  /**
   * Before a registration (signature checked) touches the miner's row: refuses it here unless this object is
   * the miner's shard under POOL_SHARDS (a router still on the old count sent it), and pulls the miner's state
   * from its old shard when this one does not know it. Null: go on.
   */
  async adopt(address: string): Promise<Failure | null> {
    const layout = this.layout();
    if (!layout) return null;
    const a = address.toLowerCase();
    const home = homeOf(a, layout.to);
    if (!this.is(home)) {
      const message = `this pool object is not the miner's shard under POOL_SHARDS=${layout.to} (${home}): retry`;
      return { code: "conflict", message, details: { retry_after_s: 1 } };
    }
    this.tables();
    if (this.known(a)) {
      this.confirmLater();
      return null;
    }
    const from = homeOf(a, layout.from);
    if (this.is(from)) return null;
    const running = this.pulling.get(a) ?? this.pull(a, from, home).finally(() => this.pulling.delete(a));
    this.pulling.set(a, running);
    return running;
  }

  /** Outcomes for miners this shard does not know yet: their state comes first (else the outcomes would be dropped). */
  async adoptAll(addresses: string[]): Promise<void> {
    if (!this.layout()) return;
    const unknown = [...new Set(addresses.map((a) => a.toLowerCase()))].filter((a) => !this.known(a));
    await Promise.all(
      unknown.map((a) =>
        this.adopt(a).then(
          (failure) => failure && console.warn(`pool handover of ${a} waits: ${failure.message}`),
          (err) => console.error(`pool handover of ${a}: ${String(err)}`),
        ),
      ),
    );
  }

  private async pull(a: string, from: string, home: string): Promise<Failure | null> {
    const old = this.stub(from);
    this.sql.exec(`DELETE FROM ledger WHERE miner = ?`, a); // what an interrupted pull left
    let after = 0;
    for (;;) {
      const page = await old.handoverExport(a, home, after).catch((err: unknown) => ({
        ok: false as const,
        error: { code: "conflict" as const, message: `the miner's previous pool shard did not answer (${String(err)}): retry` },
      }));
      if (!page.ok) return page.error;
      if (!page.state) return null; // unknown there too: a new miner
      const { state, ledger, more } = page;
      this.ctx.storage.transactionSync(() => {
        for (const row of ledger) insertRow(this.sql, "ledger", row, ["id"]);
      });
      after = Number(ledger.at(-1)?.id ?? after);
      if (more) continue;
      this.ctx.storage.transactionSync(() => {
        insertRow(this.sql, "miners", { ...state.miner, inflight: 0 });
        for (const at of state.faucet) this.sql.exec(`INSERT INTO faucet_grants (address, at) VALUES (?, ?)`, a, at);
        for (const s of state.channels) this.sql.exec(`INSERT OR IGNORE INTO miner_channels (miner, session_id) VALUES (?, ?)`, a, s);
        this.sql.exec(`INSERT OR REPLACE INTO handover_in (address, from_shard, at, confirmed) VALUES (?, ?, ?, 0)`, a, from, Date.now());
        this.sql.exec(`DELETE FROM handover_out WHERE address = ?`, a); // it had left here once, and is back
      });
      await this.confirm(a, from, home);
      return null;
    }
  }

  /** The old shard drops its copy; a failure leaves the note for a later try (the old copy stays marked moved). */
  private async confirm(a: string, from: string, home: string): Promise<void> {
    try {
      if (await this.stub(from).handoverConfirm(a, home)) this.sql.exec(`UPDATE handover_in SET confirmed = 1 WHERE address = ?`, a);
    } catch (err) {
      console.error(`pool handover of ${a}: confirm to ${from} failed: ${String(err)}`);
    }
  }

  private confirmLater(): void {
    const layout = this.layout();
    if (!layout) return;
    const due = this.sql
      .exec<{ address: string; from_shard: string }>(
        `SELECT address, from_shard FROM handover_in WHERE confirmed = 0 AND at < ? LIMIT 4`,
        Date.now() - CONFIRM_RETRY_MS,
      )
      .toArray();
    for (const d of due) this.ctx.waitUntil(this.confirm(d.address, d.from_shard, homeOf(d.address, layout.to)));
  }

  /** The old shard asks before it deletes: this shard holds the miner, pulled from `from`. */
  holds(address: string, from: string): boolean {
    this.tables();
    return (
      this.sql
        .exec(
          `SELECT 1 FROM miners m JOIN handover_in h ON h.address = m.address WHERE m.address = ? AND h.from_shard = ?`,
          address.toLowerCase(),
          from,
        )
        .toArray().length > 0
    );
  }

  // ── the old shard's side ─────────────────────────────────────────────────────────────────────────────

  /** Only for an address of this shard under POOL_SHARDS_FROM, asked for by its shard under POOL_SHARDS. */
  private check(address: string, to: string): { ok: true; a: string; self: string } | { ok: false; error: Failure } {
    const layout = this.layout();
    if (!layout) return refuse("no pool handover is in progress (POOL_SHARDS_FROM is not set)");
    const a = address.toLowerCase();
    if (!ADDRESS.test(a)) return refuse("not a miner address");
    const self = homeOf(a, layout.from);
    if (!this.is(self)) return refuse(`this pool object is not the miner's shard under POOL_SHARDS_FROM=${layout.from}`);
    const target = homeOf(a, layout.to);
    if (to !== target || this.is(target)) return refuse(`${to} is not the miner's shard under POOL_SHARDS=${layout.to}`);
    return { ok: true, a, self };
  }

  /** Phase 1: the miner's state, marked moved here but not deleted; `after`: the last ledger id already taken. */
  export(address: string, to: string, after: number): ExportAnswer {
    const ok = this.check(address, to);
    if (!ok.ok) return ok;
    const { a } = ok;
    this.tables();
    const miner = this.sql.exec<Row>(`SELECT * FROM miners WHERE address = ?`, a).toArray()[0];
    if (!miner) return { ok: true, state: null, ledger: [], more: false };
    const inFlight = this.sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ledger WHERE miner = ? AND status IN ('pending', 'submitted')`, a)
      .one().n;
    if (inFlight > 0) {
      const message = `${inFlight} slash(es) of this miner are on their way to the chain from its previous pool shard: retry shortly`;
      return { ok: false, error: { code: "conflict", message, details: { retry_after_s: 2 } } };
    }
    const marked = this.sql.exec(`SELECT 1 FROM handover_out WHERE address = ?`, a).toArray().length > 0;
    // Every token of the miner stops connecting here (once): from now on it lives in one place, its new shard.
    if (!marked) bumpEpoch(this.sql, a);
    this.sql.exec(
      `INSERT INTO handover_out (address, to_shard, at) VALUES (?, ?, ?) ON CONFLICT (address) DO UPDATE SET to_shard = excluded.to_shard`,
      a,
      to,
      Date.now(),
    );
    const rows = this.sql.exec<Row>(`SELECT * FROM ledger WHERE miner = ? AND id > ? ORDER BY id LIMIT ?`, a, after, PAGE + 1).toArray();
    const state: MinerState = {
      miner: this.sql.exec<Row>(`SELECT * FROM miners WHERE address = ?`, a).one(),
      faucet: this.sql
        .exec<{ at: number }>(`SELECT at FROM faucet_grants WHERE address = ?`, a)
        .toArray()
        .map((r) => r.at),
      channels: this.sql
        .exec<{ session_id: string }>(`SELECT session_id FROM miner_channels WHERE miner = ?`, a)
        .toArray()
        .map((r) => r.session_id),
    };
    return { ok: true, state, ledger: rows.slice(0, PAGE), more: rows.length > PAGE };
  }

  /** Phase 2: the new shard has the miner (it says so when asked): this copy goes. Idempotent. */
  async release(address: string, to: string): Promise<boolean> {
    const ok = this.check(address, to);
    if (!ok.ok) return false;
    const { a, self } = ok;
    this.tables();
    const mark = this.sql.exec<{ done: number }>(`SELECT done FROM handover_out WHERE address = ? AND to_shard = ?`, a, to).toArray()[0];
    if (!mark) return false;
    if (mark.done) return true;
    if (!(await this.stub(to).handoverHolds(a, self))) return false;
    this.ctx.storage.transactionSync(() => {
      for (const [table, column] of DROP) this.sql.exec(`DELETE FROM ${table} WHERE ${column} = ?`, a);
      this.sql.exec(`UPDATE handover_out SET done = 1 WHERE address = ?`, a);
    });
    this.leftCache = null;
    return true;
  }

  /** For the operator: miners stored here whose shard under POOL_SHARDS is another object (not handed over yet). */
  left(): { left: number; unconfirmed: number } {
    this.tables();
    const unconfirmed = this.sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM handover_out o JOIN miners m ON m.address = o.address WHERE o.done = 0`)
      .one().n;
    const now = Date.now();
    if (!this.leftCache || now - this.leftCache.at > LEFT_TTL_MS) this.leftCache = { at: now, left: this.countLeft() };
    return { left: this.leftCache.left, unconfirmed };
  }

  private countLeft(): number {
    const shards = poolShards(this.env);
    if (shards > 1 && this.is(DIRECTORY)) return this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM miners`).one().n;
    const mine = new Map<number, boolean>();
    let left = 0;
    for (const { address } of this.sql.exec<{ address: string }>(`SELECT address FROM miners`)) {
      const k = shardOf(address, shards);
      if (!mine.has(k)) mine.set(k, this.is(shardName(k, shards)));
      if (!mine.get(k)) left++;
    }
    return left;
  }
}

/** What a confirmed handover deletes from the old shard. */
const DROP: [string, string][] = [
  ["miners", "address"],
  ["ledger", "miner"],
  ["faucet_grants", "address"],
  ["miner_channels", "miner"],
  ["assignments", "miner"],
  ["challenges", "address"],
];

/** Inserts a row copied from another shard (same schema): the columns this table has, less `skip`. */
function insertRow(sql: SqlStorage, table: string, row: Row, skip: string[] = []): void {
  const columns = sql
    .exec<{ name: string }>(`SELECT name FROM pragma_table_info(?)`, table)
    .toArray()
    .map((c) => c.name)
    .filter((c) => c in row && !skip.includes(c));
  const marks = columns.map(() => "?").join(", ");
  sql.exec(`INSERT INTO ${table} (${columns.join(", ")}) VALUES (${marks})`, ...columns.map((c) => row[c]));
}

export interface HandoverProgress {
  from: number;
  to: number;
  /** Miners stored in an old shard whose shard under POOL_SHARDS is another object. */
  left: number;
  /** Miners exported whose old copy is not dropped yet. */
  unconfirmed: number;
  shards: Record<string, { left: number; unconfirmed: number }>;
}

/** The operator's view while POOL_SHARDS_FROM is set: per old shard, miners not handed over yet. */
export async function handoverProgress(env: Env): Promise<HandoverProgress | null> {
  const from = poolShardsFrom(env);
  if (from === null) return null;
  const names = [...Array(from).keys()].map((k) => shardName(k, from));
  const parts = await Promise.all(names.map((n) => env.NODE_POOL.get(env.NODE_POOL.idFromName(n)).handoverLeft()));
  const shards = Object.fromEntries(names.map((n, i) => [n, parts[i]]));
  const sum = (key: "left" | "unconfirmed") => parts.reduce((s, p) => s + p[key], 0);
  return { from, to: poolShards(env), left: sum("left"), unconfirmed: sum("unconfirmed"), shards };
}
