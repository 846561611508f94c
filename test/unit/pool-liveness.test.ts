import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { routerIdentity } from "../../durable-objects/deployment.ts";
import type { NodePool } from "../../durable-objects/node-pool.ts";
import { type PoolLiveness, phasedAt, STALE_CLOSE_MIN } from "../../durable-objects/pool-liveness.ts";
import { POOL_PING, POOL_PONG } from "../../shared/protocol.ts";
import {
  api,
  createSession,
  env,
  errorOf,
  json,
  MinerSet,
  ORIGIN,
  openSocket,
  poolStub,
  sleep,
  TestMiner,
  uniq,
  waitFor,
} from "./helpers.ts";

// Issue 21: liveness that does not wake the pool, heartbeat figures written in batches, shedding past a budget,
// and /miners paging.

const miners = new MinerSet();
afterEach(async () => {
  await runInDurableObject(poolStub(), (pool) => {
    const live = liveOf(pool);
    live.frames.budget = 2_000;
    live.connects.budget = 300;
  });
  await miners.closeAll();
});

/** The pool's in-memory liveness (a private field: tests reach in as the stale-check test reaches into SQL). */
const liveOf = (pool: NodePool) => (pool as unknown as { live: PoolLiveness }).live;

/** Every raw text frame the pool sends on the miner's pool socket from now on. */
function frames(m: TestMiner): string[] {
  const out: string[] = [];
  m.pool!.addEventListener("message", (ev) => {
    out.push(String(ev.data));
  });
  return out;
}

interface Node {
  address: string;
  status: string;
  memory_mb: number | null;
  cpu_usage: number | null;
  last_seen: number | null;
}

async function node(address: string): Promise<Node | undefined> {
  return (await json<{ nodes: Node[] }>(await api("GET", "/miners?limit=500"))).nodes.find((n) => n.address === address);
}

const heartbeat = (memory_mb: number) => JSON.stringify({ type: "heartbeat", inflight: 0, cpu_usage: 10, memory_mb });

describe("NodePool liveness without waking", () => {
  it("answers the liveness ping by the runtime (the pool's handler never runs), and the stale check counts it", async () => {
    const model = uniq("model");
    const [pinger, silent] = [await miners.start({ models: [model] }), await miners.start({ models: [model] })];
    expect(pinger.poolMessages[0]).toMatchObject({ type: "registered", ping: true });
    const got = frames(pinger);
    const t0 = Date.now();
    pinger.pool!.send(POOL_PING);
    await waitFor(() => got.includes(POOL_PONG), "the pong");
    // Had the pool's webSocketMessage run, the ping (no protocol message) would have been answered invalid_message.
    await sleep(200);
    expect(got).toEqual([POOL_PONG]);
    // Both miners' frames are long past and the pool woke long ago: only the pinger's ping (runtime-kept) is recent.
    await runInDurableObject(poolStub(), (pool, state) => {
      const live = liveOf(pool) as unknown as { seen: Map<string, number>; wokeAt: number };
      live.seen.set(pinger.address, 0);
      live.seen.set(silent.address, 0);
      live.wokeAt = 0;
      const [ws] = state.getWebSockets(pinger.address);
      expect(state.getWebSocketAutoResponseTimestamp(ws)!.getTime()).toBeGreaterThanOrEqual(t0 - 5);
    });
    expect(await runDurableObjectAlarm(poolStub())).toBe(true);
    expect((await node(pinger.address))?.status).toBe("online");
    expect((await node(silent.address))?.status).toBe("offline");
    // last_seen shows the ping, though it was never written by a handler.
    expect((await node(pinger.address))?.last_seen).toBeGreaterThanOrEqual(t0 - 5);
  });
});

describe("NodePool stale check under lag", () => {
  it("an alarm that ran late (queued behind frames) does not count that lag as the miners' silence", async () => {
    const m = await miners.start({ models: [uniq("model")] });
    const hb = m.reg!.heartbeat_ms;
    // Silent for four intervals, but the alarm itself ran two intervals late: within three intervals of lag-free time.
    await runInDurableObject(poolStub(), (pool) => {
      const inner = pool as unknown as { live: { seen: Map<string, number>; wokeAt: number }; alarmDue: number | null };
      inner.live.seen.set(m.address, Date.now() - 4 * hb);
      inner.live.wokeAt = 0;
      inner.alarmDue = Date.now() - 2 * hb;
    });
    expect(await runDurableObjectAlarm(poolStub())).toBe(true);
    expect((await node(m.address))?.status).toBe("online");
    // On time, the same silence closes it.
    await runInDurableObject(poolStub(), (pool) => {
      const inner = pool as unknown as { live: { seen: Map<string, number> }; alarmDue: number | null };
      inner.live.seen.set(m.address, Date.now() - 4 * hb);
      inner.alarmDue = Date.now();
    });
    expect(await runDurableObjectAlarm(poolStub())).toBe(true);
    expect((await node(m.address))?.status).toBe("offline");
  });
});

/** A miner registered and connected straight to `pool` (a NodePool of its own, not the test pool), and the codes its socket was closed with. */
async function connectTo(pool: DurableObjectStub<NodePool>): Promise<{ address: string; closed: number[] }> {
  const account = privateKeyToAccount(generatePrivateKey());
  const router = routerIdentity(env, ORIGIN);
  const ch = await pool.challenge(account.address, router);
  const signature = await account.signMessage({ message: ch.message });
  const req = { address: account.address, nonce: ch.nonce, signature, models: ["m"], device: "cpu" as const, capacity: 1, stake: 1000 };
  const out = await pool.register(req, router);
  if (!out.ok) throw new Error(JSON.stringify(out.error));
  const res = await pool.fetch(
    new Request("https://pool/connect", { headers: { Upgrade: "websocket", "X-Miner-Claims": JSON.stringify(out.claims) } }),
  );
  expect(res.status).toBe(101);
  const ws = res.webSocket!;
  const closed: number[] = [];
  ws.addEventListener("close", (e) => {
    closed.push(e.code);
  });
  ws.accept();
  return { address: out.claims.address, closed };
}

describe("NodePool stale check under a mass silence", () => {
  it("closes at most a tenth of the sockets per pass (at least 8), the stalest first, the rest on later passes", async () => {
    const stub = env.NODE_POOL.get(env.NODE_POOL.idFromName(uniq("stale-pool")));
    const ms: { address: string; closed: number[] }[] = [];
    for (let i = 0; i < STALE_CLOSE_MIN + 4; i++) ms.push(await connectTo(stub));
    const silent = async () =>
      runInDurableObject(stub, (pool) => {
        const inner = pool as unknown as { live: { seen: Map<string, number>; wokeAt: number }; alarmDue: number | null };
        // All silent for a minute; miner i a second longer than miner i + 1.
        for (const [i, m] of ms.entries()) inner.live.seen.set(m.address, Date.now() - 60_000 - (ms.length - i) * 1000);
        inner.live.wokeAt = 0;
        inner.alarmDue = Date.now();
      });
    await silent();
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await waitFor(() => ms.filter((m) => m.closed.length).length >= STALE_CLOSE_MIN, "the first pass's closes");
    await sleep(100);
    expect(ms.map((m) => m.closed[0] ?? null)).toEqual(ms.map((_, i) => (i < STALE_CLOSE_MIN ? 4008 : null)));
    await silent();
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await waitFor(() => ms.every((m) => m.closed.length), "the second pass's closes");
    expect(ms.every((m) => m.closed[0] === 4008)).toBe(true);
  });
});

describe("stale-check phases", () => {
  it("each shard's check falls at its own phase, half a period to a period and a half away, so S shards never line up", () => {
    const period = 10_000;
    const S = 8;
    for (let i = 0; i < 500; i++) {
      const now = 1_700_000_000_000 + Math.floor(Math.random() * 1e9);
      const at = Array.from({ length: S }, (_, k) => phasedAt(now, period, k / S));
      for (const [k, t] of at.entries()) {
        expect(t - now).toBeGreaterThanOrEqual(period / 2);
        expect(t - now).toBeLessThan(1.5 * period);
        expect((((t - (k * period) / S) % period) + period) % period).toBe(0);
      }
      // Any two shards' checks, taken modulo the period, are at least period / S apart.
      const offsets = at.map((t) => t % period).sort((a, b) => a - b);
      for (let k = 1; k < S; k++) expect(offsets[k] - offsets[k - 1]).toBeGreaterThanOrEqual(period / S);
    }
  });
});

describe("NodePool heartbeat batching", () => {
  it("keeps figures in memory until a flush or a read, one row per miner however many heartbeats", async () => {
    const m = await miners.start({ models: [uniq("model")] });
    m.pool!.send(heartbeat(111));
    m.pool!.send(heartbeat(222));
    const row = async () =>
      runInDurableObject(poolStub(), (pool, state) => ({
        backlog: liveOf(pool).backlog,
        memory: state.storage.sql.exec<{ memory_mb: number | null }>(`SELECT memory_mb FROM miners WHERE address = ?`, m.address).one()
          .memory_mb,
      }));
    const before = await waitFor(async () => {
      const r = await row();
      return r.backlog >= 1 && r;
    }, "the heartbeats to be held in memory");
    expect(before.memory).not.toBe(222);
    // A read flushes first: the listing shows the latest figures, and they are now in SQLite.
    expect((await node(m.address))?.memory_mb).toBe(222);
    expect(await row()).toEqual({ backlog: 0, memory: 222 });
  });

  it("loses nothing durable on eviction: registration, stake and token survive, pending figures are all it may lose", async () => {
    const m = await miners.start({ models: [uniq("model")], stake: 4321 });
    m.pool!.send(heartbeat(333));
    await waitFor(async () => runInDurableObject(poolStub(), (pool) => liveOf(pool).backlog >= 1), "a pending heartbeat");
    await evictDurableObject(poolStub());
    const after = await runInDurableObject(poolStub(), (_pool, state) =>
      state.storage.sql.exec<{ stake: number; capacity: number }>(`SELECT stake, capacity FROM miners WHERE address = ?`, m.address).one(),
    );
    expect(after).toEqual({ stake: 4321, capacity: 4 });
    // The hibernated socket is still the miner's: listed online after the wake, and its pings still answered.
    expect((await node(m.address))?.status).toBe("online");
    const got = frames(m);
    m.pool!.send(POOL_PING);
    await waitFor(() => got.includes(POOL_PONG), "the pong after the eviction");
  });
});

describe("NodePool shedding", () => {
  it("past the frame budget, drops the figures, keeps the miner live, and tells it once (overloaded, a longer interval)", async () => {
    const m = await miners.start({ models: [uniq("model")] });
    m.pool!.send(heartbeat(500));
    await waitFor(async () => (await node(m.address))?.memory_mb === 500, "the first figures");
    await runInDurableObject(poolStub(), (pool) => {
      liveOf(pool).frames.budget = 0;
    });
    const got = frames(m);
    m.pool!.send(heartbeat(900));
    m.pool!.send(heartbeat(901));
    await waitFor(() => got.length >= 1, "the overloaded notice");
    await sleep(200);
    expect(got).toHaveLength(1);
    expect(JSON.parse(got[0])).toMatchObject({ type: "error", code: "overloaded", heartbeat_ms: 2 * m.reg!.heartbeat_ms });
    const n = await node(m.address);
    expect(n).toMatchObject({ status: "online", memory_mb: 500 });
  });

  it("past the connect budget, refuses a connect with 429 rate_limited in the router's error body", async () => {
    const m = new TestMiner({ models: [uniq("model")] });
    await m.register();
    await runInDurableObject(poolStub(), (pool) => {
      liveOf(pool).connects.budget = 0;
    });
    const { res, ws } = await openSocket("/miners/connect", m.reg!.token);
    expect(ws).toBeNull();
    expect(res.status).toBe(429);
    const body = await errorOf(res);
    expect(body.error.code).toBe("rate_limited");
    expect(body.error.message).toMatch(/connects/);
    expect(body.request_id).toBeTruthy();
  });
});

describe("NodePool batched rebalance and /miners paging", () => {
  it("miners connecting together each get their sessions, within max_miners", async () => {
    const model = uniq("model");
    const sid = await createSession({ model, max_miners: 3 });
    const group = await Promise.all(Array.from({ length: 6 }, () => miners.start({ models: [model] })));
    await waitFor(() => group.filter((m) => m.poolSessions().includes(sid)).length === 3, "three miners assigned");
    expect((await json<{ miners_count: number }>(await api("GET", `/sessions/${sid}`))).miners_count).toBe(3);
  });

  it("pages with limit and before (newest first, no repeats), stats counting every miner", async () => {
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) {
      const m = new TestMiner({ models: [uniq("model")] });
      await m.register();
      mine.push(m.address);
    }
    const seen: string[] = [];
    let before: string | null = null;
    let pages = 0;
    do {
      const res = await api("GET", `/miners?limit=2${before ? `&before=${before}` : ""}`);
      const page = await json<{ nodes: Node[]; next_before: string | null; stats: { total: number } }>(res);
      expect(page.nodes.length).toBeLessThanOrEqual(2);
      expect(page.stats.total).toBeGreaterThanOrEqual(5);
      seen.push(...page.nodes.map((n) => n.address));
      before = page.next_before;
      pages++;
    } while (before && pages < 500);
    expect(new Set(seen).size).toBe(seen.length);
    // Newest registration first: the five in reverse order of registering.
    expect(seen.filter((a) => mine.includes(a))).toEqual([...mine].reverse());
    const bad = await api("GET", "/miners?limit=100000");
    expect(bad.status).toBe(400);
  });
});
