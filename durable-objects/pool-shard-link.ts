import type { CatalogSession } from "./pool-assignment.ts";
import type { ShardSummary } from "./pool-directory.ts";
import { DIRECTORY, poolDirectory, shardIndexOf } from "./pool-shards.ts";

// A pool shard's link to the directory (POOL_SHARDS > 1; with one shard every method is a no-op): it pushes
// the shard's summary at most once a PUSH_MS while miners come and go and on each stale-check alarm, catches
// up on sessions it missed, and holds the directory's router-key lease around chain transactions, so slash
// batches and faucet grants from every shard go out one at a time (the router key's nonces are serial).

export const PUSH_MS = 1_000;
/**
 * The stale-check alarm (every 10 s) pushes only when the last push is this old: changes (connects, leaves,
 * bench changes, assignments) push within PUSH_MS anyway, and the figures a refresh carries (CPU, memory,
 * inflight) arrive in JSON heartbeats about once a minute. On a thread several shards share, each summary is a
 * stall every request waits behind.
 */
export const REFRESH_MS = 60_000;
/** How long a transaction waits for another shard's to finish before trying at its next pass. */
const LEASE_WAIT_MS = 10_000;
const LEASE_POLL_MS = 200;

/** The router key stayed with another pool object's transaction for LEASE_WAIT_MS: try at the next pass. */
export class RouterKeyBusy extends Error {}

export interface ShardHooks {
  summary(now: number): ShardSummary;
  /** How many active sessions this shard holds. */
  sessions(): number;
  /** Sessions the directory has and this shard may lack, with this shard's share. */
  catchUp(catalog: { config: CatalogSession; share: number }[]): void;
  /** The directory's own lease (pool-directory.ts), for the directory itself: it sends too, as an old shard (1 → S). */
  routerKey(holder: string, take: boolean): Promise<boolean>;
}

export class ShardLink {
  /** This object is a shard of a sharded pool (not the directory, not the only pool). */
  readonly active: boolean;
  private readonly env: Env;
  private readonly ctx: DurableObjectState;
  private readonly shards: number;
  private readonly hooks: ShardHooks;
  private index: number | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** When the last summary went out (0: none since this object woke). */
  private pushedAt = 0;

  constructor(ctx: DurableObjectState, env: Env, shards: number, hooks: ShardHooks) {
    this.ctx = ctx;
    this.env = env;
    this.shards = shards;
    this.hooks = hooks;
    this.active = shards > 1 && !ctx.id.equals(env.NODE_POOL.idFromName(DIRECTORY));
  }

  /** This shard's number, from its object id (not from a miner it holds: after POOL_SHARDS changed it may still hold others'). */
  private shard(): number | null {
    if (this.index === null && this.active) this.index = shardIndexOf(this.env, this.ctx.id);
    return this.index;
  }

  /** This shard's place among the shards, k / S (0 unsharded or while it holds no miner): its stale checks' phase. */
  phase(): number {
    return this.active ? (this.shard() ?? 0) / this.shards : 0;
  }

  pushSoon(): void {
    if (!this.active || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.ctx.waitUntil(this.push().catch((err) => console.error(`pool shard summary not pushed: ${String(err)}`)));
    }, PUSH_MS);
  }

  /** The alarm's push: only when nothing went out for REFRESH_MS (a change pushes on its own). */
  async refresh(now: number): Promise<void> {
    if (now - this.pushedAt >= REFRESH_MS) await this.push();
  }

  /** Sends the summary now; a directory with more active sessions than this shard is asked for them. */
  async push(): Promise<void> {
    const k = this.shard();
    if (!this.active || k === null) return;
    const directory = poolDirectory(this.env);
    const now = Date.now();
    const { sessions } = await directory.shardSummary(k, this.hooks.summary(now));
    this.pushedAt = now;
    if (sessions > this.hooks.sessions()) this.hooks.catchUp(await directory.shardCatalog(k));
  }

  /**
   * Runs `send` while holding the router-key lease (at once with one pool object); throws RouterKeyBusy when it
   * stays busy. The directory takes the same lease locally: after a 1 → S change it still sends its own slashes.
   */
  async leased<T>(send: () => Promise<T>): Promise<T> {
    if (this.shards === 1) return send();
    const routerKey = this.active
      ? (holder: string, take: boolean) => poolDirectory(this.env).routerKey(holder, take)
      : this.hooks.routerKey;
    const holder = this.ctx.id.toString();
    for (const start = Date.now(); !(await routerKey(holder, true)); ) {
      if (Date.now() - start > LEASE_WAIT_MS) throw new RouterKeyBusy("the router key is busy with another pool object's transaction");
      await new Promise((r) => setTimeout(r, LEASE_POLL_MS));
    }
    try {
      return await send();
    } finally {
      await routerKey(holder, false);
    }
  }
}
