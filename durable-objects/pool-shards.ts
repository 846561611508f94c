import type { ModelContext } from "../shared/api.ts";
import { poolShards, shardOf } from "../shared/pool-shard.ts";
import type { SessionJoin } from "./miner-credentials.ts";
import type { MinerStats, MinerView } from "./pool-miners.ts";
import type { ReplicaOutcome } from "./reputation.ts";

// Where a miner's pool state lives. With POOL_SHARDS = S (a power of two, default 1) the miner registry is split
// over S NodePool objects by a hash of the address: shard k = uint32(keccak256(address)[0..4]) mod S. Every
// per-miner path (challenge, register, connect, revoke, token checks, ledger, faucet, reputation) goes to the
// miner's shard, computed from the address the caller already has: no directory lookup. The object named
// "pool" keeps the session catalog (and, with S > 1, the shards' summaries: pool-directory.ts); with S = 1 it
// is also the only shard, exactly as before sharding. Callers use these helpers instead of naming objects.

export { poolShards, shardOf };

/** The object with the session catalog and the shard summaries; with one shard also that shard. */
export const DIRECTORY = "pool";

/** The object name of shard k: "pool" when there is one shard, else "pool-k" ("pool" is then the directory only). */
export function shardName(k: number, shards: number): string {
  return shards === 1 ? DIRECTORY : `pool-${k}`;
}

const named = (env: Env, name: string) => env.NODE_POOL.get(env.NODE_POOL.idFromName(name));
export const poolDirectory = (env: Env) => named(env, DIRECTORY);
export const poolShard = (env: Env, k: number) => named(env, shardName(k, poolShards(env)));
/** The miner's own shard: the one writer of its registration, epochs, stake, reputation and ledger. */
export const minerShard = (env: Env, address: string) => poolShard(env, shardOf(address, poolShards(env)));

/**
 * Which shard an object is, from its id and the shards' names (at most 256 hashes): null for the directory of a
 * sharded pool or any other object. Not from an address it holds: after POOL_SHARDS changed, a shard still
 * holds miners whose shard is now another one until they are handed over (pool-handover.ts).
 */
export function shardIndexOf(env: Env, id: DurableObjectId): number | null {
  const shards = poolShards(env);
  for (let k = 0; k < shards; k++) if (id.equals(env.NODE_POOL.idFromName(shardName(k, shards)))) return k;
  return null;
}

/** Groups items by the shard of their address. */
export function byShard<T>(items: readonly T[], addressOf: (t: T) => string, shards: number): Map<number, T[]> {
  const out = new Map<number, T[]>();
  for (const item of items) {
    const k = shardOf(addressOf(item), shards);
    out.set(k, [...(out.get(k) ?? []), item]);
  }
  return out;
}

/** Runs `fn` on each shard that holds some of `items`, in parallel. */
async function fanOut<T, R>(
  env: Env,
  items: readonly T[],
  addressOf: (t: T) => string,
  fn: (k: number, part: T[]) => Promise<R>,
): Promise<R[]> {
  return Promise.all([...byShard(items, addressOf, poolShards(env))].map(([k, part]) => fn(k, part)));
}

type Standing = Record<string, { score: number; benched: boolean }>;
const self = (a: string) => a;

/** Score and bench flag per address, each asked of its own shard. */
export async function reputations(env: Env, addresses: string[]): Promise<Standing> {
  const parts = await fanOut(env, addresses, self, (k, part) => poolShard(env, k).reputations(part));
  return Object.assign({}, ...parts);
}

/** A SessionQueue's batch of outcomes, split by the miners' shards; answers the touched miners' standing. */
export async function recordOutcomes(env: Env, outcomes: ReplicaOutcome[]): Promise<Standing> {
  const parts = await fanOut(
    env,
    outcomes,
    (o) => o.miner,
    (k, part) => poolShard(env, k).recordOutcomes(part),
  );
  return Object.assign({}, ...parts);
}

/** The named miners from their shards, in the order asked (unknown ones left out). */
export async function minerViews(env: Env, addresses: string[], caller: string | null = null): Promise<MinerView[]> {
  const parts = await fanOut(env, addresses, self, (k, part) => poolShard(env, k).minerViews(part, caller));
  const found = new Map(parts.flat().map((v) => [v.address, v]));
  return addresses.flatMap((a) => found.get(a.toLowerCase()) ?? []);
}

/**
 * A SessionQueue's join: the miner's own shard answers for its token, its assignment and its contexts, with that
 * shard's members of the session. The shards of `others` (the connected miners the queue may have to choose
 * among: it names them only when the session is full) add their members, so a join costs one shard call, not S
 * (after a deploy every miner re-joins every session it serves).
 */
export async function sessionJoin(
  env: Env,
  sessionId: string,
  address: string,
  epoch: number,
  others: readonly string[] = [],
): Promise<SessionJoin> {
  const shards = poolShards(env);
  const mine = shardOf(address, shards);
  if (shards === 1) return poolShard(env, 0).sessionJoin(sessionId, address, epoch);
  const asked = [...byShard(others, (a) => a, shards).keys()].filter((k) => k !== mine);
  const [answer, ...members] = await Promise.all([
    poolShard(env, mine).sessionJoin(sessionId, address, epoch),
    ...asked.map((k) => poolShard(env, k).sessionMembers(sessionId)),
  ]);
  return { ...answer, members: [...answer.members, ...members.flat()] };
}

/** Live, unbenched miners of a model: from the one pool, or from the directory's shard summaries. */
export async function serving(env: Env, model: string): Promise<{ miners: number; contexts: (ModelContext | null)[] }> {
  return poolShards(env) === 1 ? poolDirectory(env).serving(model) : poolDirectory(env).shardedServing(model);
}

/** /info, /status and the portal's figures. */
export async function overview(env: Env) {
  return poolShards(env) === 1 ? poolDirectory(env).overview() : poolDirectory(env).shardedOverview();
}

/** What a SessionQueue asks of the pool, routed by shard. */
export function poolFor(env: Env) {
  return {
    reputations: (addresses: string[]) => reputations(env, addresses),
    recordOutcomes: (outcomes: ReplicaOutcome[]) => recordOutcomes(env, outcomes),
    sessionJoin: (sessionId: string, address: string, epoch: number, others?: readonly string[]) =>
      sessionJoin(env, sessionId, address, epoch, others),
    serving: (model: string) => serving(env, model),
  };
}

// ── /miners across shards ──────────────────────────────────────────────────────────────────────────────

/** The opaque cursor of a sharded listing: `s<k>-<address>` (after that miner in shard k), `s<k>-` (shard k from its start). */
const CURSOR = /^s(\d{1,3})-(0x[0-9a-f]{40})?$/;

export function parseCursor(before: string | undefined, shards: number): { shard: number; before?: string } | null {
  if (!before) return { shard: 0 };
  const m = CURSOR.exec(before.toLowerCase());
  if (m) {
    const shard = Number(m[1]);
    return shard < shards ? { shard, ...(m[2] ? { before: m[2] } : {}) } : null;
  }
  // A plain address (a cursor from before sharding, or a client's own): after that miner in its shard.
  return /^0x[0-9a-f]{40}$/i.test(before) ? { shard: shardOf(before, shards), before: before.toLowerCase() } : null;
}

/**
 * A page of miners: newest first within a shard, shard after shard. `stats` count every shard (the directory's
 * summaries). The response shape is the unsharded one; `next_before` is an opaque cursor. At most S shard
 * calls per page (empty shards are skipped), each reading at most `limit` rows.
 */
export async function listMiners(
  env: Env,
  caller: string,
  limit = 100,
  before?: string,
): Promise<{ nodes: MinerView[]; next_before: string | null; stats: MinerStats }> {
  const shards = poolShards(env);
  if (shards === 1) return poolDirectory(env).listMiners(caller, limit, before);
  const stats = poolDirectory(env).shardedStats();
  const at = parseCursor(before, shards);
  const nodes: MinerView[] = [];
  let next: string | null = null;
  for (let k = at?.shard ?? shards, after = at?.before; k < shards && nodes.length < limit; k++, after = undefined) {
    const page = await poolShard(env, k).minerPage(caller, limit - nodes.length, after);
    nodes.push(...page.nodes);
    if (page.next_before) next = `s${k}-${page.next_before}`;
    else next = k + 1 < shards ? `s${k + 1}-` : null;
  }
  return { nodes, next_before: next, stats: await stats };
}
