// The pool's miners' liveness and load figures, kept in memory and written to SQLite in batches, so a heartbeat
// costs a map update instead of a durable commit, and a liveness ping costs the pool nothing: the runtime answers
// POOL_PING itself (WebSocket auto-response) and keeps the time, which the stale check reads per socket.
// What a crash or an eviction loses: the figures and last_seen of the last FLUSH_MS, and the last_seen of
// ping-only miners for up to DURABLE_SEEN_MS: liveness and metrics only. Registration, stake, reputation and the
// ledger are written at once by their own code, never through here.

export const FLUSH_MS = 2_000;
export const DURABLE_SEEN_MS = 60_000;
/** Heartbeat frames per second the pool handles in full; past it, their figures are dropped and liveness kept. */
export const FRAME_BUDGET_PER_S = 2_000;
/** Connects per second the pool accepts; past it, a connect is refused (429) and the agent retries with backoff. */
export const CONNECT_BUDGET_PER_S = 300;

export interface Figures {
  inflight: number;
  cpu_usage: number;
  memory_mb: number;
  tokens_per_s: number | null;
}

interface Pending {
  last_seen: number;
  figures?: Figures;
}

/** A stale check closes at most this share of the sockets per pass (at least STALE_CLOSE_MIN): node-pool.ts. */
export const STALE_CLOSE_SHARE = 0.1;
export const STALE_CLOSE_MIN = 8;

export function staleCloseCap(sockets: number): number {
  return Math.max(STALE_CLOSE_MIN, Math.ceil(sockets * STALE_CLOSE_SHARE));
}

/**
 * When the next stale check runs: between half a period and a period and a half from now, at `phase` (0 ≤ phase
 * < 1) of the period. Shards take phase k/S, so their O(miners) passes never line up: on one thread (Miniflare,
 * a colo running several shards) aligned passes made one stall of S passes, which every request behind it waited.
 */
export function phasedAt(now: number, period: number, phase: number): number {
  const offset = Math.floor(phase * period);
  let at = Math.floor((now - offset) / period) * period + offset + period;
  if (at - now < period / 2) at += period;
  return at;
}

/** Counts events per one-second window against a budget (load shedding). */
export class RateWindow {
  budget: number;
  private start = 0;
  private count = 0;

  constructor(budget: number) {
    this.budget = budget;
  }

  /** Counts one event; false when this second's budget is spent. */
  admit(now: number): boolean {
    if (now - this.start >= 1000) {
      this.start = now;
      this.count = 0;
    }
    return ++this.count <= this.budget;
  }
}

export class PoolLiveness {
  readonly frames = new RateWindow(FRAME_BUDGET_PER_S);
  readonly connects = new RateWindow(CONNECT_BUDGET_PER_S);
  /** Until a socket's first frame after a wake, its miner counts as seen at the wake (hibernation keeps no memory). */
  readonly wokeAt = Date.now();
  /** The last frame handled per miner (pings are timed by the runtime instead). */
  private readonly seen = new Map<string, number>();
  private readonly pending = new Map<string, Pending>();
  /** last_seen as last written, so the liveness of ping-only miners is written sparsely. */
  private readonly written = new Map<string, number>();
  /** Miners told of shedding, per minute (one notice each, not one per dropped frame). */
  private readonly told = new Map<string, number>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly ctx: DurableObjectState;

  constructor(ctx: DurableObjectState) {
    this.ctx = ctx;
  }

  /** A heartbeat's figures: in memory now, durable at the next flush. */
  heartbeat(address: string, figures: Figures, now: number): void {
    this.seen.set(address, now);
    this.pending.set(address, { last_seen: now, figures });
    this.schedule();
  }

  /** Liveness only (a connect, a shed frame): the figures pending stay. */
  touch(address: string, now: number): void {
    this.seen.set(address, now);
    this.pending.set(address, { ...this.pending.get(address), last_seen: now });
    this.schedule();
  }

  /** When the miner on `ws` was last heard from: its last ping (runtime-kept), its last frame, or the wake. */
  lastSeen(ws: WebSocket, address: string): number {
    const ping = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(ping, this.seen.get(address) ?? 0, this.wokeAt);
  }

  /** The last ping the runtime answered on the miner's socket (0: none since it connected). */
  lastPing(address: string): number {
    const ws = this.ctx.getWebSockets(address)[0];
    return ws ? (this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0) : 0;
  }

  /** Whether the miner is yet to be told it is being shed this minute. */
  firstShed(address: string, now: number): boolean {
    if ((this.told.get(address) ?? 0) > now - 60_000) return false;
    if (this.told.size > 10_000) this.told.clear();
    this.told.set(address, now);
    return true;
  }

  /** Queues the ping-only miners' liveness whose written last_seen is older than DURABLE_SEEN_MS (stale check). */
  sweep(sockets: { ws: WebSocket; address: string }[]): void {
    for (const { ws, address } of sockets) {
      const ping = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      if (ping - (this.written.get(address) ?? 0) >= DURABLE_SEEN_MS && !this.pending.has(address))
        this.pending.set(address, { last_seen: ping });
    }
    this.flush();
  }

  /** Writes every pending row in one transaction. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.pending.size) return;
    const rows = [...this.pending];
    this.pending.clear();
    const sql = this.ctx.storage.sql;
    this.ctx.storage.transactionSync(() => {
      for (const [address, p] of rows) {
        const f = p.figures;
        if (f) {
          sql.exec(
            `UPDATE miners SET last_seen = ?, inflight = ?, cpu_usage = ?, memory_mb = ?, tokens_per_s = ? WHERE address = ?`,
            p.last_seen,
            f.inflight,
            f.cpu_usage,
            f.memory_mb,
            f.tokens_per_s,
            address,
          );
        } else sql.exec(`UPDATE miners SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE address = ?`, p.last_seen, address);
        this.written.set(address, p.last_seen);
      }
    });
  }

  /** The miner left: its pending row is written, its memory dropped. */
  forget(address: string): void {
    this.flush();
    this.seen.delete(address);
    this.written.delete(address);
  }

  /** Pending rows not yet written (tests, the bench). */
  get backlog(): number {
    return this.pending.size;
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }
}
