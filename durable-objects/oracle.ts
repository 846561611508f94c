import { DurableObject } from "cloudflare:workers";

export interface BlockSnapshot {
  /** Height of the latest produced block. */
  height: number;
  /** When that block was produced (epoch ms). */
  at: number;
  interval_ms: number;
  genesis_at: number;
}

/** Height at `now` derived from a snapshot, so readers need not call the oracle on their hot path. */
export function heightAt(snap: BlockSnapshot, now: number): number {
  return snap.height + Math.max(0, Math.floor((now - snap.at) / snap.interval_ms));
}

/**
 * A cached view of the oracle's clock for objects that stamp blocks on their hot path: heights derive from the
 * snapshot, refreshed now and then so drift between the oracle and the reader stays small.
 */
export class BlockClock {
  private snap: BlockSnapshot | null = null;
  private readonly fetch: () => Promise<BlockSnapshot>;
  private readonly waitUntil: (p: Promise<unknown>) => void;

  constructor(fetch: () => Promise<BlockSnapshot>, waitUntil: (p: Promise<unknown>) => void) {
    this.fetch = fetch;
    this.waitUntil = waitUntil;
  }

  async load(): Promise<void> {
    this.snap = await this.fetch();
  }

  /** The height at `at` (0 before the first load). */
  height(at: number): number {
    if (!this.snap) return 0;
    if (at - this.snap.at > 60_000) this.waitUntil(this.fetch().then((s) => void (this.snap = s)));
    return heightAt(this.snap, at);
  }
}

/**
 * Network time as virtual blocks. An alarm produces one block per interval; heights derive from genesis
 * and interval, so an evicted or restarted oracle resumes at the right height instead of drifting.
 */
export class Oracle extends DurableObject<Env> {
  private snap: BlockSnapshot | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, at INTEGER NOT NULL)`);
    ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1),
      genesis_at INTEGER NOT NULL, interval_ms INTEGER NOT NULL)`);
  }

  /** The current block, starting the clock on first use. */
  async snapshot(): Promise<BlockSnapshot> {
    const now = Date.now();
    if (!this.snap) this.snap = this.load(now);
    if (heightAt(this.snap, now) !== this.snap.height) await this.produce(now);
    return this.snap;
  }

  override async alarm(): Promise<void> {
    const now = Date.now();
    if (!this.snap) this.snap = this.load(now);
    await this.produce(now);
  }

  private load(now: number): BlockSnapshot {
    const sql = this.ctx.storage.sql;
    let clock = sql.exec<{ genesis_at: number; interval_ms: number }>(`SELECT genesis_at, interval_ms FROM clock`).toArray()[0];
    if (!clock) {
      const interval = Math.max(100, Number(this.env.BLOCK_INTERVAL_MS) || 1000);
      clock = { genesis_at: now, interval_ms: interval };
      sql.exec(`INSERT INTO clock (id, genesis_at, interval_ms) VALUES (1, ?, ?)`, now, interval);
      sql.exec(`INSERT INTO blocks (height, at) VALUES (0, ?)`, now);
      void this.ctx.storage.setAlarm(now + interval);
    }
    const last = sql.exec<{ height: number; at: number }>(`SELECT height, at FROM blocks ORDER BY height DESC LIMIT 1`).one();
    return { height: last.height, at: last.at, interval_ms: clock.interval_ms, genesis_at: clock.genesis_at };
  }

  /** Records the block due at `now` (skipped heights are implied by genesis + interval) and re-arms. */
  private async produce(now: number): Promise<void> {
    const snap = this.snap!;
    const height = Math.floor((now - snap.genesis_at) / snap.interval_ms);
    if (height > snap.height) {
      const at = snap.genesis_at + height * snap.interval_ms;
      const sql = this.ctx.storage.sql;
      sql.exec(`INSERT OR IGNORE INTO blocks (height, at) VALUES (?, ?)`, height, at);
      // Keep a day of history at one-second blocks; older heights are still derivable.
      sql.exec(`DELETE FROM blocks WHERE height < ?`, height - 86_400);
      this.snap = { ...snap, height, at };
    }
    await this.ctx.storage.setAlarm(this.snap!.genesis_at + (this.snap!.height + 1) * snap.interval_ms);
  }

  async recent(limit = 10): Promise<{ height: number; at: number }[]> {
    await this.snapshot();
    return this.ctx.storage.sql
      .exec<{ height: number; at: number }>(`SELECT height, at FROM blocks ORDER BY height DESC LIMIT ?`, limit)
      .toArray();
  }
}
