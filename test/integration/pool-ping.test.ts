import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import { createLogger } from "../../miner-agent/src/log.ts";
import { PoolConnection } from "../../miner-agent/src/pool-connection.ts";
import type { Stats } from "../../miner-agent/src/stats.ts";
import { HEARTBEAT_FULL_EVERY, POOL_PING, POOL_PONG } from "../../shared/protocol.ts";

// Issue 21, the agent's side of liveness without waking the pool: against a pool that answers pings
// (`registered.ping`) it sends the ping each interval and its figures only when they change (or every
// HEARTBEAT_FULL_EVERY-th interval); against an older pool only the JSON heartbeat; `overloaded` stretches the
// interval. A fake pool (a `ws` server) records every frame.

const ADDRESS = "0x00000000000000000000000000000000000000aa";
const servers: WebSocketServer[] = [];
const conns: PoolConnection[] = [];
afterEach(async () => {
  await Promise.all(conns.splice(0).map((c) => c.close()));
  for (const s of servers.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function fakePool(registered: Record<string, unknown>): Promise<{ url: string; frames: string[]; socket: () => WebSocket | null }> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  servers.push(wss);
  await new Promise((r) => wss.once("listening", r));
  const frames: string[] = [];
  let socket: WebSocket | null = null;
  wss.on("connection", (ws) => {
    socket = ws;
    ws.on("message", (data) => {
      const text = data.toString();
      frames.push(text);
      // What the runtime's auto-response does.
      if (text === POOL_PING) ws.send(POOL_PONG);
    });
    ws.send(JSON.stringify({ type: "registered", address: ADDRESS, block: 1, ...registered }));
  });
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, frames, socket: () => socket };
}

function connect(url: string, inflight: () => number, lines: string[] = []): PoolConnection {
  const c = new PoolConnection({
    url,
    address: ADDRESS,
    tokens: { token: async () => "t", invalidate: () => {} },
    log: createLogger({ format: "json", write: (l) => lines.push(l) }),
    // Steady figures, so only inflight changes them.
    stats: { cpuPercent: () => 5, memoryMb: () => 100, tokensPerSecond: () => undefined } as unknown as Stats,
    inflight,
    heartbeatMs: 50,
    onRegistered: () => {},
    onSessions: () => {},
  });
  conns.push(c);
  c.start();
  return c;
}

const beats = (frames: string[]) => frames.filter((f) => f !== POOL_PING).map((f) => JSON.parse(f) as { type: string; inflight: number });

describe("miner agent pool channel: liveness pings", () => {
  it("pings a pool that answers pings, sends figures on change and every HEARTBEAT_FULL_EVERY-th interval, ignores pongs", async () => {
    const pool = await fakePool({ heartbeat_ms: 100, ping: true });
    let inflight = 0;
    const lines: string[] = [];
    connect(pool.url, () => inflight, lines);
    await sleep(100 * (HEARTBEAT_FULL_EVERY + 3));
    const pings = pool.frames.filter((f) => f === POOL_PING).length;
    // One heartbeat on `registered`, then one full one per HEARTBEAT_FULL_EVERY intervals, pings in between.
    expect(pings).toBeGreaterThanOrEqual(HEARTBEAT_FULL_EVERY - 4);
    expect(beats(pool.frames).length).toBeGreaterThanOrEqual(1);
    expect(beats(pool.frames).length).toBeLessThanOrEqual(3);
    expect(beats(pool.frames).every((b) => b.type === "heartbeat")).toBe(true);
    // A change of inflight goes out at the next interval, not a minute later.
    const before = pool.frames.length;
    inflight = 3;
    await sleep(250);
    expect(beats(pool.frames.slice(before)).some((b) => b.inflight === 3)).toBe(true);
    // Pongs are not logged as malformed frames.
    expect(lines.filter((l) => l.includes("malformed"))).toEqual([]);
  });

  it("sends only JSON heartbeats to an older pool (no `ping` in registered)", async () => {
    const pool = await fakePool({ heartbeat_ms: 100 });
    connect(pool.url, () => 0);
    await sleep(650);
    expect(pool.frames.length).toBeGreaterThanOrEqual(4);
    expect(pool.frames).not.toContain(POOL_PING);
    expect(beats(pool.frames)).toHaveLength(pool.frames.length);
  });

  it("stretches its interval when the pool says it is overloaded", async () => {
    const pool = await fakePool({ heartbeat_ms: 100 });
    connect(pool.url, () => 0);
    await sleep(450);
    const fast = pool.frames.length;
    expect(fast).toBeGreaterThanOrEqual(3);
    pool.socket()!.send(JSON.stringify({ type: "error", code: "overloaded", message: "shed", heartbeat_ms: 1_000 }));
    await sleep(100);
    const at = pool.frames.length;
    await sleep(800);
    // At the old interval this would be ~8 more frames; at 1 s, none or one.
    expect(pool.frames.length - at).toBeLessThanOrEqual(1);
  });
});
