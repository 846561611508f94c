import { shardOf } from "../shared/pool-shard.ts";
import type { CatalogSession } from "./pool-assignment.ts";

// How many of a session's max_miners each pool shard assigns from its own miners (with POOL_SHARDS > 1). The
// shares never add up to more than max_miners, so the session's cap holds without cross-shard coordination.
// Ephemeral sessions: in proportion to the shard's live miners of the model (largest remainder); when the
// network has fewer than max_miners, every shard takes all of its own and the rest of the places are spread
// round the shards, so a miner arriving anywhere is used before the directory recomputes. Dedicated sessions:
// each listed miner's shard gets a place for it, in list order, up to max_miners.

/** Splits `max` places over shards with `available` miners each. */
export function splitShares(max: number, available: readonly number[]): number[] {
  const total = available.reduce((a, b) => a + b, 0);
  const n = available.length;
  if (total <= max) {
    const out = [...available];
    for (let left = max - total, i = 0; left > 0; left--, i = (i + 1) % n) out[i]++;
    return out;
  }
  const exact = available.map((a) => (max * a) / total);
  const out = exact.map(Math.floor);
  const order = [...exact.keys()].sort((a, b) => exact[b] - out[b] - (exact[a] - out[a]) || a - b);
  for (let left = max - out.reduce((a, b) => a + b, 0), i = 0; left > 0; left--, i++) out[order[i]]++;
  return out;
}

/** Places of a dedicated session per shard: one per listed miner in that shard, the first max_miners listed. */
export function dedicatedShares(session: Pick<CatalogSession, "dedicated_miners" | "max_miners">, shards: number): number[] {
  const out = new Array<number>(shards).fill(0);
  for (const address of session.dedicated_miners.slice(0, session.max_miners)) out[shardOf(address, shards)]++;
  return out;
}

/** A session's shares given each shard's live miners of its model. */
export function sessionShares(session: CatalogSession, available: readonly number[]): number[] {
  return session.mode === "dedicated" ? dedicatedShares(session, available.length) : splitShares(session.max_miners, available);
}
