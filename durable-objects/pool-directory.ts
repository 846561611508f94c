import type { ModelContext } from "../shared/api.ts";
import type { CatalogSession } from "./pool-assignment.ts";
import { activeSessions, catalogCounts, setMinerCounts } from "./pool-catalog.ts";
import type { MinerStats } from "./pool-miners.ts";
import { sessionShares } from "./pool-shares.ts";

// The directory of a sharded pool (POOL_SHARDS > 1), kept by the object named "pool" beside the session
// catalog. Each shard pushes its summary (pool-shard-summary.ts) at most once a second while miners come and go,
// and with every stale-check alarm: live miners per model and their distinct contexts, /miners stats, the
// /status figures, and how many miners it assigns to each session. /status, /info, /miners' stats and a
// session's "is anyone serving this model" read these summaries: O(shards), never O(miners). Summaries are
// kept in storage, so an evicted directory answers with the last ones at once. The directory also decides each
// shard's share of every session's max_miners (pool-shares.ts) and re-sends shares when a model's miners move.

export interface ShardSummary {
  at: number;
  /** Live, unbenched miners per model, with the distinct contexts they declared for it. */
  models: Record<string, { miners: number; contexts: (ModelContext | null)[] }>;
  stats: MinerStats;
  /** Connected miners (benched included), those serving a dedicated session, CPU average, memory sum. */
  figures: { connected: number; dedicated: number; cpu_usage: number; memory_mb: number };
  /** Miners this shard assigns to each session (sessions with none left out). */
  counts: Record<string, number>;
}

const KEY = "shard-summary:";
/** The router-key lease, in storage: a directory evicted while a shard sends must not lend the key twice. */
const LEASE_KEY = "router-key-lease";
/** How long a router-key lease lasts if its holder never gives it back (a crashed shard). */
export const LEASE_MS = 30_000;

const EMPTY_STATS: MinerStats = { total: 0, online: 0, benched: 0, offline: 0, capacity: 0, inflight: 0, by_device: { cpu: 0, webgpu: 0 } };

export class ShardDirectory {
  private readonly storage: DurableObjectStorage;
  private readonly sql: SqlStorage;
  private summaries: Map<number, ShardSummary> | null = null;
  /** The shares last sent per session (memory: after an eviction they are sent again, which is idempotent). */
  private readonly sent = new Map<string, number[]>();
  private readonly shards: number;

  constructor(storage: DurableObjectStorage, shards: number) {
    this.storage = storage;
    this.shards = shards;
    this.sql = storage.sql;
  }

  private async all(): Promise<Map<number, ShardSummary>> {
    if (!this.summaries) {
      const stored = await this.storage.list<ShardSummary>({ prefix: KEY });
      this.summaries = new Map([...stored].map(([key, s]) => [Number(key.slice(KEY.length)), s]));
    }
    return this.summaries;
  }

  /**
   * Takes shard k's summary: writes sessions' total miner counts that changed, and answers the shares that
   * changed per shard because a model's live miners moved (the caller sends them).
   */
  async record(k: number, summary: ShardSummary, now: number): Promise<Map<number, Record<string, number>>> {
    const all = await this.all();
    const before = all.get(k);
    const touched = new Set([...Object.keys(before?.counts ?? {}), ...Object.keys(summary.counts)]);
    const oldSums = this.sums(all, touched);
    all.set(k, summary);
    await this.storage.put(`${KEY}${k}`, summary);
    const newSums = this.sums(all, touched);
    setMinerCounts(this.sql, new Map([...newSums].filter(([id, n]) => oldSums.get(id) !== n)), now);
    const moved = new Set(
      [...new Set([...Object.keys(before?.models ?? {}), ...Object.keys(summary.models)])].filter(
        (m) => before?.models[m]?.miners !== summary.models[m]?.miners,
      ),
    );
    if (moved.size === 0) return new Map();
    const sessions = activeSessions(this.sql).filter((s) => s.mode === "ephemeral" && moved.has(s.model));
    return this.changedShares(sessions, all);
  }

  private sums(all: Map<number, ShardSummary>, ids: Set<string>): Map<string, number> {
    return new Map([...ids].map((id) => [id, [...all.values()].reduce((n, s) => n + (s.counts[id] ?? 0), 0)]));
  }

  private available(all: Map<number, ShardSummary>, model: string): number[] {
    return [...Array(this.shards).keys()].map((k) => all.get(k)?.models[model]?.miners ?? 0);
  }

  private changedShares(sessions: CatalogSession[], all: Map<number, ShardSummary>): Map<number, Record<string, number>> {
    const out = new Map<number, Record<string, number>>();
    for (const s of sessions) {
      const next = sessionShares(s, this.available(all, s.model));
      const prev = this.sent.get(s.id);
      next.forEach((share, k) => {
        if (prev?.[k] !== share) out.set(k, { ...out.get(k), [s.id]: share });
      });
      this.sent.set(s.id, next);
    }
    return out;
  }

  /** A new session's share per shard (remembered as sent). */
  async sharesFor(session: CatalogSession): Promise<number[]> {
    const shares = sessionShares(session, this.available(await this.all(), session.model));
    this.sent.set(session.id, shares);
    return shares;
  }

  /** Every active session with shard k's share of it (a shard that missed a session catches up). */
  async catalogFor(k: number): Promise<{ config: CatalogSession; share: number }[]> {
    const all = await this.all();
    return activeSessions(this.sql).map((config) => {
      const shares = this.sent.get(config.id) ?? sessionShares(config, this.available(all, config.model));
      this.sent.set(config.id, shares);
      return { config, share: shares[k] ?? 0 };
    });
  }

  async serving(model: string): Promise<{ miners: number; contexts: (ModelContext | null)[] }> {
    const parts = [...(await this.all()).values()].map((s) => s.models[model]).filter((m) => m !== undefined);
    const contexts = new Map(parts.flatMap((p) => p.contexts).map((c) => [JSON.stringify(c), c]));
    return { miners: parts.reduce((n, p) => n + p.miners, 0), contexts: [...contexts.values()] };
  }

  async stats(): Promise<MinerStats> {
    const out = structuredClone(EMPTY_STATS);
    for (const { stats } of (await this.all()).values()) {
      for (const key of ["total", "online", "benched", "offline", "capacity", "inflight"] as const) out[key] += stats[key];
      for (const [d, n] of Object.entries(stats.by_device)) out.by_device[d] = (out.by_device[d] ?? 0) + n;
    }
    return out;
  }

  /** /info and /status figures over every shard; the CPU average weighs each shard by its connected miners. */
  async overview() {
    const figures = [...(await this.all()).values()].map((s) => s.figures);
    const connected = figures.reduce((n, f) => n + f.connected, 0);
    return {
      sessions: catalogCounts(this.sql),
      connected,
      dedicated: figures.reduce((n, f) => n + f.dedicated, 0),
      cpu_usage: connected ? figures.reduce((n, f) => n + f.cpu_usage * f.connected, 0) / connected : 0,
      memory_mb: figures.reduce((n, f) => n + f.memory_mb, 0),
    };
  }

  /**
   * One writer for the router key across shards: a shard sends slash batches or faucet grants only while it
   * holds the lease (nonces stay serial). A holder that never gives it back loses it after LEASE_MS.
   */
  async acquire(holder: string, now: number): Promise<boolean> {
    const lease = await this.storage.get<{ holder: string; until: number }>(LEASE_KEY);
    if (lease && lease.holder !== holder && lease.until > now) return false;
    await this.storage.put(LEASE_KEY, { holder, until: now + LEASE_MS });
    return true;
  }

  async release(holder: string): Promise<void> {
    const lease = await this.storage.get<{ holder: string; until: number }>(LEASE_KEY);
    if (lease?.holder === holder) await this.storage.delete(LEASE_KEY);
  }
}
