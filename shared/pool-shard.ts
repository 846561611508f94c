import { type Hex, keccak256 } from "viem";

// Which pool shard holds a miner (durable-objects/pool-shards.ts routes by it): with POOL_SHARDS = S, shard
// k = uint32(keccak256(address)[0..4]) mod S. Pure and shared, so the router, the objects and the pool
// simulator (bench/pool.ts) agree on it.

export const MAX_POOL_SHARDS = 256;

/** POOL_SHARDS: a power of two from 1 to 256 (unset: 1). Anything else is a configuration error, not a guess. */
export function poolShards(env: { POOL_SHARDS?: string }): number {
  return shardCount("POOL_SHARDS", env.POOL_SHARDS) ?? 1;
}

/**
 * POOL_SHARDS_FROM: the shard count miners are being handed over from after POOL_SHARDS changed
 * (durable-objects/pool-handover.ts); unset or empty: no handover in progress. Validated like POOL_SHARDS.
 */
export function poolShardsFrom(env: { POOL_SHARDS_FROM?: string }): number | null {
  return shardCount("POOL_SHARDS_FROM", env.POOL_SHARDS_FROM);
}

function shardCount(name: string, raw: string | undefined): number | null {
  if (raw === undefined || raw === "") return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_POOL_SHARDS || (n & (n - 1)) !== 0) {
    throw new Error(`${name} must be a power of two from 1 to ${MAX_POOL_SHARDS}, not ${JSON.stringify(raw)}`);
  }
  return n;
}

/** The shard of an address: the first four bytes of keccak256 of its 20 bytes, mod S. */
export function shardOf(address: string, shards: number): number {
  if (shards === 1) return 0;
  const hash = keccak256(address.toLowerCase() as Hex);
  return Number.parseInt(hash.slice(2, 10), 16) & (shards - 1);
}
