import type { ModelContext } from "../shared/api.ts";
import type { SessionConfig } from "../shared/views.ts";
import { contextFor } from "./miner-credentials.ts";
import type { CatalogSession } from "./pool-assignment.ts";
import type { ShardSummary } from "./pool-directory.ts";
import { connectedRows, minerStats, networkOverview, type Presence, statusOf } from "./pool-miners.ts";

// A pool shard's side of the directory (POOL_SHARDS > 1): the summary it pushes, and the replica of the session
// catalog it assigns from. Sessions reach every shard with the shard's share of max_miners, which the replica
// keeps as the config's max_miners (this shard's catalog is read only by its own assignment; listings and
// session lookups go to the directory).

/**
 * What the shard pushes to the directory, counted over its own miners only: one read of the connected miners'
 * rows serves the models, the stats and the figures (it runs on every stale-check alarm).
 */
export function shardSummary(
  sql: SqlStorage,
  presence: Presence,
  sockets: readonly { address: string; models: string[] }[],
  now: number,
): ShardSummary {
  const rows = connectedRows(sql, presence);
  // Live: connected and not benched, the bench judged on the same rows the stats count.
  const contexts = new Map(rows.filter((r) => statusOf(r, presence) === "online").map((r) => [r.address, r.contexts ?? null]));
  const models: ShardSummary["models"] = {};
  const seen = new Map<string, Set<string>>();
  for (const m of sockets) {
    if (!contexts.has(m.address)) continue;
    const declared = contexts.get(m.address);
    const parsed = declared ? (JSON.parse(declared) as ModelContext[]) : null;
    for (const model of m.models) {
      const entry = (models[model] ??= { miners: 0, contexts: [] });
      entry.miners++;
      const c = contextFor(parsed, model);
      const key = JSON.stringify(c);
      const keys = seen.get(model) ?? seen.set(model, new Set()).get(model)!;
      if (!keys.has(key)) {
        keys.add(key);
        entry.contexts.push(c);
      }
    }
  }
  const { connected, dedicated, cpu_usage, memory_mb } = networkOverview(sql, presence, rows);
  const counts = Object.fromEntries(
    sql
      .exec<{ id: string; n: number }>(`SELECT session_id AS id, COUNT(*) AS n FROM assignments GROUP BY session_id`)
      .toArray()
      .map((r) => [r.id, r.n]),
  );
  return { at: now, models, stats: minerStats(sql, presence, rows), figures: { connected, dedicated, cpu_usage, memory_mb }, counts };
}

/** Adds a session to the shard's replica, or sets its share when it is there. */
export function hostSession(sql: SqlStorage, config: CatalogSession | SessionConfig, share: number, now: number): void {
  const row = JSON.stringify({ ...config, max_miners: share });
  sql.exec(
    `INSERT INTO sessions (id, config, active, owner, created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET config = excluded.config`,
    config.id,
    row,
    config.owner,
    now,
    now,
  );
}

/** Sets this shard's share of sessions it holds; answers whether any changed. */
export function setShares(sql: SqlStorage, shares: Record<string, number>): boolean {
  let changed = false;
  for (const [id, share] of Object.entries(shares)) {
    const r = sql.exec(
      `UPDATE sessions SET config = json_set(config, '$.max_miners', ?) WHERE id = ? AND json_extract(config, '$.max_miners') != ?`,
      share,
      id,
      share,
    );
    if (r.rowsWritten > 0) changed = true;
  }
  return changed;
}
