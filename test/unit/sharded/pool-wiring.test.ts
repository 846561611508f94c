import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { ShardDirectory } from "../../../durable-objects/pool-directory.ts";
import { PUSH_MS, REFRESH_MS, type ShardLink } from "../../../durable-objects/pool-shard-link.ts";
import { poolShard, poolShards, recordOutcomes, shardOf } from "../../../durable-objects/pool-shards.ts";
import { api, createSession, env, json, MinerSet, poolStub, replicaOutcome, sleep, TestMiner, uniq, waitFor } from "../helpers.ts";

// The sharded pool's wiring, inside the Workers runtime: this file runs in its own vitest project
// ("unit-sharded", vitest.config.ts) whose router has POOL_SHARDS = 4, so the routes, the shards' summary
// pushes, the directory's share splitting and the shards' stale-check phases are the router's own, not called
// by the test (test/unit/pool-shards.test.ts drives shard objects by name from a one-shard router).

const S = 4;
const PERIOD = 2 * Number(env.HEARTBEAT_MS);
const miners = new MinerSet();
afterEach(() => miners.closeAll());

interface SessionRow {
  config: string;
}

/** The sessions shard k hosts, with its share of max_miners. */
const sharesOn = (k: number) =>
  runInDurableObject(poolShard(env, k), (_, state) =>
    state.storage.sql
      .exec<SessionRow & Record<string, SqlStorageValue>>(`SELECT config FROM sessions WHERE active = 1`)
      .toArray()
      .map((r) => JSON.parse(r.config) as { id: string; max_miners: number }),
  );

describe("sharded pool wiring (POOL_SHARDS = 4)", () => {
  it("runs the router with four shards", () => {
    expect(poolShards(env)).toBe(S);
  });

  it("shards push their summaries: a session for the model is served, split over the shards, and pushed to every miner", async () => {
    const model = uniq("model");
    const ms: Awaited<ReturnType<MinerSet["start"]>>[] = [];
    for (let i = 0; i < 8; i++) ms.push(await miners.start({ models: [model] }));
    const shards = new Set(ms.map((m) => shardOf(m.address, S)));
    expect(shards.size).toBeGreaterThan(1); // 8 random addresses all in one of 4 shards: 4^-7
    // Creating a session asks the directory whether anyone serves the model: only the shards' summaries say so.
    const sid = await waitFor(
      async () => {
        try {
          return await createSession({ model, max_miners: 8 });
        } catch {
          return undefined;
        }
      },
      "the directory to learn of the model from the shards' summaries",
      10_000,
    );
    await waitFor(() => ms.every((m) => m.poolSessions().includes(sid)), "every miner to be told of the session");
    // Each shard holds the session with a share; the shares sum to max_miners and each covers its miners.
    let sum = 0;
    for (let k = 0; k < S; k++) {
      const share = (await sharesOn(k)).find((s) => s.id === sid)?.max_miners ?? 0;
      expect(share).toBeGreaterThanOrEqual(ms.filter((m) => shardOf(m.address, S) === k).length);
      sum += share;
    }
    expect(sum).toBe(8);
    // The directory's figures count every shard's miners (each shard's push follows its last change within a second).
    await waitFor(
      async () => (await json<{ stats: { online: number } }>(await api("GET", "/miners?limit=1"))).stats.online >= 8,
      "the directory's stats to count all eight",
    );
  });

  it("arms each shard's stale check at its own phase of the period, so shards never run their passes together", async () => {
    const model = uniq("model");
    const byShard = new Map<number, string>();
    while (byShard.size < S) {
      const m = await miners.start({ models: [model] });
      byShard.set(shardOf(m.address, S), m.address);
    }
    for (let k = 0; k < S; k++) {
      const alarm = await runInDurableObject(poolShard(env, k), (_, state) => state.storage.getAlarm());
      expect(alarm).not.toBeNull();
      expect((((alarm! - (k * PERIOD) / S) % PERIOD) + PERIOD) % PERIOD).toBe(0);
    }
  });

  it("a shard's stale-check alarm refreshes its summary only when none went out for a minute (changes push on their own)", async () => {
    const m = new TestMiner({ models: [uniq("model")] });
    const k = shardOf(m.address, S);
    const pushedAt = () =>
      runInDurableObject(poolStub(), async (_, state) => (await state.storage.get<{ at: number }>(`shard-summary:${k}`))?.at ?? 0);
    const before = await pushedAt();
    await m.register();
    await m.connectPool();
    miners.all.push(m);
    // The connect (and its rebalance) pushed within a second; then nothing is pending.
    await waitFor(async () => (await pushedAt()) > before, "the connect's summary push");
    await sleep(PUSH_MS + 500);
    const first = await pushedAt();
    expect(await runDurableObjectAlarm(poolShard(env, k))).toBe(true);
    await sleep(300);
    expect(await pushedAt()).toBe(first);
    // A minute without a push: the alarm refreshes it.
    await runInDurableObject(poolShard(env, k), (instance) => {
      Object.assign((instance as unknown as { shard: object }).shard, { pushedAt: Date.now() - REFRESH_MS });
    });
    expect(await runDurableObjectAlarm(poolShard(env, k))).toBe(true);
    await waitFor(async () => (await pushedAt()) > first, "the alarm's refresh");
  });

  it("a full session makes room across shards: the join asks the connected miners' shards and closes the one no shard assigns", async () => {
    const model = uniq("model");
    /** A started miner whose address falls in a shard `accepts` takes. */
    const minerIn = async (accepts: (k: number) => boolean) => {
      for (;;) {
        const m = new TestMiner({ models: [model] });
        if (!accepts(shardOf(m.address, S))) continue;
        await m.register();
        await m.connectPool();
        miners.all.push(m);
        return m;
      }
    };
    const a = await minerIn(() => true);
    const ka = shardOf(a.address, S);
    const b = await minerIn((k) => k !== ka);
    const sid = await waitFor(
      async () => {
        try {
          return await createSession({ model, max_miners: 2 });
        } catch {
          return undefined;
        }
      },
      "the directory to learn of the model",
      10_000,
    );
    const wsA = await a.join(sid);
    const closedA: number[] = [];
    wsA.addEventListener("close", (e) => {
      closedA.push(e.code);
    });
    await b.join(sid);
    // C lives in A's shard; A is benched there (ten outliers), so that shard assigns C in A's place. A's
    // session socket is still open and idle: the session is full when C comes.
    const c = await minerIn((k) => k === ka);
    await recordOutcomes(
      env,
      Array.from({ length: 10 }, (_, i) => replicaOutcome(a.address, "outlier", 0, `t${i}`)),
    );
    await waitFor(() => c.poolSessions().includes(sid), "C's shard to assign it the session");
    await c.join(sid);
    // A's shard no longer assigns A, B's shard (asked because B is connected) still assigns B: A gives way.
    await waitFor(() => closedA.length > 0, "A's session socket to close");
    expect(closedA).toEqual([4003]);
    expect(b.sockets.get(sid)?.readyState).toBe(WebSocket.OPEN);
  });

  it("the directory takes the router-key lease too before it sends (an old shard's slashes after 1 → S)", async () => {
    await runInDurableObject(poolStub(), async (instance) => {
      const pool = instance as unknown as { directory: ShardDirectory; shard: ShardLink };
      expect(await pool.directory.acquire("a-shard", Date.now())).toBe(true);
      let releasedAt = 0;
      let sentAt = 0;
      const release = sleep(300).then(async () => {
        releasedAt = Date.now();
        await pool.directory.release("a-shard");
      });
      await pool.shard.leased(async () => {
        sentAt = Date.now();
      });
      await release;
      expect(sentAt).toBeGreaterThanOrEqual(releasedAt);
      // and gave it back
      expect(await pool.directory.acquire("a-shard", Date.now())).toBe(true);
      await pool.directory.release("a-shard");
    });
  });
});
