import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { type Hex, hexToNumber, keccak256, slice } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { routerIdentity } from "../../durable-objects/deployment.ts";
import type { MinerClaims } from "../../durable-objects/miner-sockets.ts";
import type { CatalogSession } from "../../durable-objects/pool-assignment.ts";
import { insertSession, sessionSummary } from "../../durable-objects/pool-catalog.ts";
import { LEASE_MS, ShardDirectory, type ShardSummary } from "../../durable-objects/pool-directory.ts";
import type { MinerStats } from "../../durable-objects/pool-miners.ts";
import {
  listMiners,
  minerShard,
  minerViews,
  parseCursor,
  poolShard,
  poolShards,
  recordOutcomes,
  reputations,
  sessionJoin,
  shardName,
  shardOf,
} from "../../durable-objects/pool-shards.ts";
import { dedicatedShares, splitShares } from "../../durable-objects/pool-shares.ts";
import type { ReplicaOutcome } from "../../durable-objects/reputation.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { env, ORIGIN, replicaOutcome, uniq, waitFor } from "./helpers.ts";

// The sharded pool (POOL_SHARDS > 1). The unit pool runs with one shard, so these tests name the shard objects
// themselves ("pool-k") through an env with POOL_SHARDS = 4: the routing helpers are the ones the router uses,
// the objects are real NodePools with their own SQLite. The wiring (shards pushing summaries, the directory
// spreading sessions) runs under wrangler dev in test/integration/pool-shards.test.ts.

const S = 4;
const sharded = { ...env, POOL_SHARDS: String(S) } as Env;
const router = routerIdentity(env, ORIGIN);
const sockets: WebSocket[] = [];
afterEach(() => {
  for (const ws of sockets.splice(0)) ws.close();
});

const randomAddress = () => `0x${[...crypto.getRandomValues(new Uint8Array(20))].map((b) => b.toString(16).padStart(2, "0")).join("")}`;

/** Registers a fresh miner with its own shard, as the route does. */
async function register(models = ["m"]): Promise<MinerClaims> {
  const account = privateKeyToAccount(generatePrivateKey());
  const shard = minerShard(sharded, account.address);
  const ch = await shard.challenge(account.address, router);
  const signature = await account.signMessage({ message: ch.message });
  const req = { address: account.address, nonce: ch.nonce, signature, models, device: "cpu" as const, capacity: 1, stake: 1000 };
  const out = await shard.register(req, router);
  if (!out.ok) throw new Error(JSON.stringify(out.error));
  return out.claims;
}

/** Opens the miner's pool socket on its shard (the route's upgrade, claims already verified). */
async function connect(claims: MinerClaims): Promise<{ ws: WebSocket; frames: { type: string; sessions?: { session_id: string }[] }[] }> {
  const headers = { Upgrade: "websocket", "X-Miner-Claims": JSON.stringify(claims) };
  const res = await minerShard(sharded, claims.address).fetch(new Request("https://pool/connect", { headers }));
  expect(res.status).toBe(101);
  const ws = res.webSocket!;
  const frames: { type: string }[] = [];
  ws.addEventListener("message", (e) => {
    frames.push(JSON.parse(e.data as string));
  });
  ws.accept();
  sockets.push(ws);
  return { ws, frames };
}

const outcome = (miner: string, kind: ReplicaOutcome["outcome"], reward: number) => replicaOutcome(miner, kind, reward, "1");

function catalogSession(over: Partial<CatalogSession> = {}): CatalogSession {
  return {
    id: uniq("s"),
    owner: "dev",
    model: "m",
    mode: "ephemeral",
    dedicated_miners: [],
    max_miners: 8,
    created_at: Date.now(),
    ...over,
  };
}

describe("pool shards: routing", () => {
  it("reads POOL_SHARDS as a power of two from 1 to 256 and refuses anything else", () => {
    expect(poolShards({ POOL_SHARDS: "" })).toBe(1);
    expect(poolShards({ POOL_SHARDS: "1" })).toBe(1);
    expect(poolShards({ POOL_SHARDS: "16" })).toBe(16);
    for (const bad of ["3", "0", "-4", "512", "4.0x", "two"]) expect(() => poolShards({ POOL_SHARDS: bad })).toThrow(/power of two/);
    expect(shardName(0, 1)).toBe("pool");
    expect(shardName(3, 4)).toBe("pool-3");
  });

  it("puts an address in shard uint32(keccak256(address)[0..4]) mod S, whatever its case", () => {
    for (let i = 0; i < 50; i++) {
      const a = randomAddress();
      const expected = hexToNumber(slice(keccak256(a as Hex), 0, 4)) % 16;
      expect(shardOf(a, 16)).toBe(expected);
      expect(shardOf(a.toUpperCase().replace("0X", "0x"), 16)).toBe(expected);
      expect(shardOf(a, 1)).toBe(0);
    }
  });

  it("spreads addresses evenly: every shard within 20 % of the mean over 8,000 addresses", () => {
    const addresses = Array.from({ length: 8000 }, randomAddress);
    for (const shards of [4, 16]) {
      const counts = new Array<number>(shards).fill(0);
      for (const a of addresses) counts[shardOf(a, shards)]++;
      const mean = addresses.length / shards;
      for (const n of counts) expect(Math.abs(n - mean) / mean).toBeLessThan(0.2);
    }
  });

  it("splits a session's max_miners over shards: never more in all, in proportion, all of a small network", () => {
    expect(splitShares(8, [10, 10, 0, 20])).toEqual([2, 2, 0, 4]);
    expect(splitShares(3, [1, 1, 1, 1]).reduce((a, b) => a + b)).toBe(3);
    // Fewer miners than places: each shard takes all of its own, the rest spread round so newcomers count.
    const small = splitShares(8, [1, 0, 2, 0]);
    expect(small.reduce((a, b) => a + b)).toBe(8);
    for (const [k, n] of [1, 0, 2, 0].entries()) expect(small[k]).toBeGreaterThanOrEqual(n);
    for (let i = 0; i < 200; i++) {
      const available = Array.from({ length: 8 }, () => Math.floor(Math.random() * 30));
      const max = 1 + Math.floor(Math.random() * 40);
      const shares = splitShares(max, available);
      expect(shares.reduce((a, b) => a + b)).toBe(max);
      if (available.reduce((a, b) => a + b) >= max) for (const [k, s] of shares.entries()) expect(s).toBeLessThanOrEqual(available[k]);
    }
  });

  it("gives a dedicated session's places to its listed miners' shards, at most max_miners", () => {
    const listed = Array.from({ length: 6 }, randomAddress);
    const shares = dedicatedShares({ dedicated_miners: listed, max_miners: 4 }, S);
    expect(shares.reduce((a, b) => a + b)).toBe(4);
    for (const a of listed.slice(0, 4)) expect(shares[shardOf(a, S)]).toBeGreaterThan(0);
  });

  it("reads paging cursors: opaque shard cursors, plain addresses in their shard, nonsense as the end", () => {
    const a = randomAddress();
    expect(parseCursor(undefined, S)).toEqual({ shard: 0 });
    expect(parseCursor(`s2-${a}`, S)).toEqual({ shard: 2, before: a });
    expect(parseCursor("s3-", S)).toEqual({ shard: 3 });
    expect(parseCursor(a, S)).toEqual({ shard: shardOf(a, S), before: a });
    for (const bad of ["s4-", "s9-", "sx-", "default", `s1-${a}x`]) expect(parseCursor(bad, S)).toBeNull();
  });
});

describe("pool shards: per-miner state in one shard", () => {
  it("registers each miner in its own shard only; tokens, views and the listing route by address", async () => {
    const claims = await Promise.all(Array.from({ length: 8 }, () => register()));
    expect(new Set(claims.map((c) => shardOf(c.address, S))).size).toBeGreaterThan(1);
    for (const c of claims) {
      for (let k = 0; k < S; k++) {
        expect(await poolShard(sharded, k).tokenCurrent(c.address, c.epoch)).toBe(k === shardOf(c.address, S));
      }
    }
    const views = await minerViews(sharded, [...claims.map((c) => c.address), randomAddress()]);
    expect(views.map((v) => v.address)).toEqual(claims.map((c) => c.address));

    // Pages of 3 across the shards: every miner exactly once, shard after shard.
    const seen: string[] = [];
    let before: string | undefined;
    for (let pages = 0; pages < 100; pages++) {
      const page = await listMiners(sharded, "dev", 3, before);
      expect(page.nodes.length).toBeLessThanOrEqual(3);
      seen.push(...page.nodes.map((n) => n.address));
      if (!page.next_before) break;
      expect(page.next_before).toMatch(/^s\d+-(0x[0-9a-f]{40})?$/);
      before = page.next_before;
    }
    expect(new Set(seen).size).toBe(seen.length);
    for (const c of claims) expect(seen).toContain(c.address);
    expect(seen.map((a) => shardOf(a, S))).toEqual([...seen.map((a) => shardOf(a, S))].sort((x, y) => x - y));
    // A cursor for a shard that does not exist reads as the end, not an error.
    expect((await listMiners(sharded, "dev", 3, "s7-")).nodes).toEqual([]);
  });

  it("keeps reputation and the ledger on the miner's shard: one batch split by shard, no other shard knows", async () => {
    const claims = await Promise.all(Array.from({ length: 6 }, () => register()));
    const batch = claims.flatMap((c, i) => [outcome(c.address, "agreed", 10 + i), outcome(c.address, i % 2 ? "rejected" : "agreed", 0)]);
    const standing = await recordOutcomes(sharded, batch);
    expect(Object.keys(standing).sort()).toEqual(claims.map((c) => c.address).sort());
    const reps = await reputations(
      sharded,
      claims.map((c) => c.address),
    );
    expect(reps).toEqual(standing);
    for (const [i, c] of claims.entries()) {
      const own = shardOf(c.address, S);
      const ledger = await poolShard(sharded, own).ledger(c.address);
      expect(ledger.filter((e) => e.kind === "reward").map((e) => e.amount)).toEqual([10 + i]);
      expect(ledger.some((e) => e.kind === "slash")).toBe(i % 2 === 1);
      for (let k = 0; k < S; k++) {
        if (k === own) continue;
        expect(await poolShard(sharded, k).ledger(c.address)).toEqual([]);
        expect(await poolShard(sharded, k).reputations([c.address])).toEqual({});
      }
    }
  });

  it("serves a session from several shards: each assigns its share, a join sees its own shard's members and those of the shards it names", async () => {
    const model = uniq("model");
    const claims = await Promise.all(Array.from({ length: 6 }, () => register([model])));
    const conns = await Promise.all(claims.map(connect));
    const available = new Array<number>(S).fill(0);
    for (const c of claims) available[shardOf(c.address, S)]++;
    const session = catalogSession({ model, max_miners: 4 });
    const shares = splitShares(session.max_miners, available);
    await Promise.all(shares.map((share, k) => poolShard(sharded, k).hostSession(session, share)));

    const members = (await Promise.all(shares.map((_, k) => poolShard(sharded, k).sessionMembers(session.id)))).flat();
    expect(members.length).toBe(4);
    for (const [k, share] of shares.entries()) {
      const mine = await poolShard(sharded, k).sessionMembers(session.id);
      expect(mine.length).toBe(Math.min(share, available[k]));
      for (const m of mine) expect(shardOf(m, S)).toBe(k);
    }
    expect(new Set(members.map((m) => shardOf(m, S))).size).toBeGreaterThan(1);
    // The assigned miners were told over their pool socket.
    for (const m of members) {
      const conn = conns[claims.findIndex((c) => c.address === m)];
      await waitFor(
        () => conn.frames.some((f) => f.type === "sessions" && f.sessions?.some((s) => s.session_id === session.id)),
        "the sessions frame",
      );
    }
    const joiner = claims.find((c) => c.address === members[0])!;
    const join = await sessionJoin(sharded, session.id, joiner.address, joiner.epoch);
    expect(join).toMatchObject({ current: true, assigned: true });
    // Alone, a join asks the joiner's shard only: that shard's members. Naming the connected others (a full
    // session) adds their shards' members: every member among them.
    const own = members.filter((m) => shardOf(m, S) === shardOf(joiner.address, S));
    expect(join.members.sort()).toEqual(own.sort());
    const full = await sessionJoin(
      sharded,
      session.id,
      joiner.address,
      joiner.epoch,
      claims.map((c) => c.address),
    );
    expect(full.members.sort()).toEqual([...members].sort());
    // A miner the shards did not assign is no member; a stale epoch is not current.
    const left = claims.find((c) => !members.includes(c.address));
    if (left) expect(await sessionJoin(sharded, session.id, left.address, left.epoch)).toMatchObject({ assigned: false });
    expect((await sessionJoin(sharded, session.id, joiner.address, joiner.epoch - 1)).current).toBe(false);

    // Tenancy across shards: the owner sees the session on its miners, another key sees the miners but not the id.
    const page = async (caller: string) => (await listMiners(sharded, caller, 500)).nodes.filter((n) => members.includes(n.address));
    for (const n of await page("dev")) expect(n.sessions).toContain(session.id);
    const foreign = await page(uniq("other-owner"));
    expect(foreign.length).toBe(members.length);
    for (const n of foreign) expect(n.sessions).not.toContain(session.id);

    // A smaller share (the directory re-split) drops that shard's extra miners.
    const busiest = shares.indexOf(Math.max(...shares));
    await poolShard(sharded, busiest).setShares({ [session.id]: 0 });
    expect(await poolShard(sharded, busiest).sessionMembers(session.id)).toEqual([]);
  });

  it("restarts one shard alone: its miners come back to it with registration, reputation, ledger and assignments", async () => {
    const model = uniq("model");
    const claims = await register([model]);
    const k = shardOf(claims.address, S);
    const shard = poolShard(sharded, k);
    await connect(claims);
    const session = catalogSession({ model, max_miners: 2 });
    await shard.hostSession(session, 2);
    await recordOutcomes(sharded, [outcome(claims.address, "agreed", 7)]);
    const repBefore = await reputations(sharded, [claims.address]);
    const ledgerBefore = await shard.ledger(claims.address);

    await evictDurableObject(shard);

    expect(minerShard(sharded, claims.address).id.equals(shard.id)).toBe(true);
    expect(await shard.tokenCurrent(claims.address, claims.epoch)).toBe(true);
    expect(await reputations(sharded, [claims.address])).toEqual(repBefore);
    expect(await shard.ledger(claims.address)).toEqual(ledgerBefore);
    expect(await shard.sessionMembers(session.id)).toEqual([claims.address]);
    const again = await connect(claims);
    await waitFor(() => again.frames.some((f) => f.type === "registered"), "registered after the restart");
  });
});

const stats = (online: number): MinerStats => ({
  total: online + 1,
  online,
  benched: 0,
  offline: 1,
  capacity: online,
  inflight: 0,
  by_device: { cpu: online, webgpu: 0 },
});

function summary(models: Record<string, number>, counts: Record<string, number> = {}): ShardSummary {
  const entries = Object.entries(models).map(([m, miners]) => [m, { miners, contexts: [{ model: m, positions: 512 }] }]);
  const online = Object.values(models).reduce((a, b) => a + b, 0);
  return {
    at: Date.now(),
    models: Object.fromEntries(entries),
    stats: stats(online),
    figures: { connected: online, dedicated: 0, cpu_usage: 40, memory_mb: 100 * online },
    counts,
  };
}

describe("pool shards: the directory", () => {
  it("answers /status, /miners stats and serving from the shards' summaries, and keeps them across an eviction", async () => {
    const stub = env.NODE_POOL.get(env.NODE_POOL.idFromName(uniq("directory")));
    const model = uniq("model");
    const config = { ...catalogSession({ model, max_miners: 6 }), name: "x", redundancy: 1 } as unknown as SessionConfig;
    await runInDurableObject(stub, async (_, state) => {
      insertSession(state.storage.sql, config, Date.now());
      const dir = new ShardDirectory(state.storage, S);
      expect(await dir.sharesFor(config)).toEqual(splitShares(6, [0, 0, 0, 0]));
      await dir.record(0, summary({ [model]: 3 }, { [config.id]: 2 }), Date.now());
      const moved = await dir.record(2, summary({ [model]: 3, other: 5 }, { [config.id]: 3 }), Date.now());
      // Three miners each in shards 0 and 2: the session's six places go three and three.
      expect(moved.get(0)?.[config.id]).toBe(3);
      expect(moved.get(2)?.[config.id]).toBe(3);
      expect(moved.get(1)?.[config.id]).toBe(0);
      expect(sessionSummary(state.storage.sql, config.id)?.miners_count).toBe(5);
      expect(await dir.serving(model)).toEqual({ miners: 6, contexts: [{ model, positions: 512 }] });
      expect(await dir.serving("nobody")).toEqual({ miners: 0, contexts: [] });
      expect(await dir.stats()).toMatchObject({ total: 13, online: 11, offline: 2, capacity: 11, by_device: { cpu: 11, webgpu: 0 } });
      expect(await dir.overview()).toMatchObject({ connected: 11, cpu_usage: 40, memory_mb: 1100 });
      // Unchanged model counts re-send nothing.
      expect((await dir.record(0, summary({ [model]: 3 }, { [config.id]: 2 }), Date.now())).size).toBe(0);
    });
    await evictDurableObject(stub);
    await runInDurableObject(stub, async (_, state) => {
      const dir = new ShardDirectory(state.storage, S);
      expect(await dir.serving(model)).toMatchObject({ miners: 6 });
      expect(await dir.catalogFor(2)).toContainEqual({ config: expect.objectContaining({ id: config.id }), share: 3 });
    });
  });

  it("lends the router key to one shard at a time; a holder that vanished loses it after the lease; the lease survives an eviction", async () => {
    const stub = env.NODE_POOL.get(env.NODE_POOL.idFromName(uniq("directory")));
    const t = Date.now();
    await runInDurableObject(stub, async (_, state) => {
      const dir = new ShardDirectory(state.storage, S);
      expect(await dir.acquire("a", t)).toBe(true);
      expect(await dir.acquire("b", t + 1)).toBe(false);
      expect(await dir.acquire("a", t + 2)).toBe(true);
      await dir.release("b"); // not the holder: nothing changes
      expect(await dir.acquire("b", t + 3)).toBe(false);
      await dir.release("a");
      expect(await dir.acquire("b", t + 4)).toBe(true);
      expect(await dir.acquire("a", t + 4 + LEASE_MS + 1)).toBe(true);
    });
    // "a" holds it; the directory is evicted: "b" still may not send until the lease runs out.
    await evictDurableObject(stub);
    await runInDurableObject(stub, async (_, state) => {
      const dir = new ShardDirectory(state.storage, S);
      expect(await dir.acquire("b", t + 4 + LEASE_MS + 2)).toBe(false);
      expect(await dir.acquire("b", t + 4 + 2 * LEASE_MS + 2)).toBe(true);
    });
  });
});
