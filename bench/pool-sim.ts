// One process of simulated miners for `npm run bench:pool` (bench/pool.ts forks a few). Each miner is a real
// wallet (a deterministic key per index, so runs are repeatable), registers with challenge → signature →
// register like miner-agent/src/registration.ts, opens the real pool channel, and sends what the agent sends:
//   heartbeat  today's JSON heartbeat every interval (what every miner released so far sends)
//   ping       the liveness ping (shared/protocol.ts POOL_PING, answered by the runtime's auto-response) every
//              interval, and the JSON heartbeat with its figures every HEARTBEAT_FULL_EVERY-th one
// Lag probes: a frame the pool must answer itself (an unknown message type gets `invalid_message`) queues behind
// every frame in the object's input, so its round trip is how far the object lags behind its heartbeats.
// No model: these miners never join a session channel. Driven over IPC; prints nothing.

import { type Hex, keccak256, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import WebSocket from "ws";
import { HEARTBEAT_FULL_EVERY, POOL_PING, POOL_PONG } from "../shared/protocol.ts";

type Mode = "heartbeat" | "ping";

interface SimMiner {
  index: number;
  address: Hex;
  key: Hex;
  token: string | null;
  ws: WebSocket | null;
  registered: boolean;
  probes: number[];
  pings: number[];
  round: number;
  retryMs: number;
}

export type SimCommand =
  | { cmd: "register"; url: string; from: number; to: number; concurrency: number; model: string }
  | { cmd: "connect"; concurrency: number }
  | { cmd: "drive"; intervalMs: number; mode: Mode; probesPerS: number }
  | { cmd: "stats" }
  | { cmd: "peek" }
  | { cmd: "stop" };

export interface SimStats {
  registered: number;
  connected: number;
  sent: number;
  pings: number;
  probeRtts: number[];
  pingRtts: number[];
  errors: Record<string, number>;
  closes: Record<string, number>;
  sessionsMsgs: number;
  assigned: number;
  reconnects: number;
}

/** A valid secp256k1 key per index: the same wallets every run. */
export const benchKey = (i: number): Hex => keccak256(toHex(`bench-pool-miner-${i}`));

const miners: SimMiner[] = [];
const assigned = new Set<number>();
let url = "";
let model = "";
let stopping = false;
let counters = freshCounters();

function freshCounters() {
  return {
    sent: 0,
    pings: 0,
    probeRtts: [] as number[],
    pingRtts: [] as number[],
    errors: {} as Record<string, number>,
    closes: {} as Record<string, number>,
    sessionsMsgs: 0,
    reconnects: 0,
  };
}

const bump = (o: Record<string, number>, k: string) => {
  o[k] = (o[k] ?? 0) + 1;
};

async function post(path: string, body: unknown): Promise<Response> {
  return fetch(`${url}/api/v1${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

async function register(m: SimMiner): Promise<void> {
  const account = privateKeyToAccount(m.key);
  for (let attempt = 0; ; attempt++) {
    const ch = await post("/miners/challenge", { address: account.address });
    if (ch.ok) {
      const { nonce, message } = (await ch.json()) as { nonce: string; message: string };
      const signature = await account.signMessage({ message });
      const body = {
        address: account.address,
        nonce,
        signature,
        models: [model],
        device: "cpu",
        capacity: 2,
        version: "bench",
        stake: 1000,
      };
      const res = await post("/miners/register", body);
      if (res.ok) {
        m.token = ((await res.json()) as { token: string }).token;
        return;
      }
      bump(counters.errors, `register_${res.status}`);
    } else bump(counters.errors, `challenge_${ch.status}`);
    if (attempt > 20) throw new Error(`miner ${m.index} could not register`);
    await new Promise((r) => setTimeout(r, 500 + Math.random() * 1000));
  }
}

function onFrame(m: SimMiner, text: string): void {
  if (text === POOL_PONG) {
    const t = m.pings.shift();
    if (t !== undefined) counters.pingRtts.push(performance.now() - t);
    return;
  }
  const msg = JSON.parse(text) as { type: string; code?: string; sessions?: unknown[] };
  if (msg.type === "registered") {
    // As the agent does: the figures at once, so the pool has them (and counts the miner alive) before the interval.
    m.registered = true;
    m.ws?.send(heartbeatFrame(m));
    counters.sent++;
  } else if (msg.type === "sessions") {
    counters.sessionsMsgs++;
    if (msg.sessions?.length) assigned.add(m.index);
    else assigned.delete(m.index);
  } else if (msg.type === "error") {
    if (msg.code === "invalid_message" && m.probes.length) counters.probeRtts.push(performance.now() - m.probes.shift()!);
    else bump(counters.errors, `pool_${msg.code}`);
  }
}

/** Opens the pool channel; resolves once it is open or refused. Reconnects (same token) after an unasked close. */
function connect(m: SimMiner): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/v1/miners/connect`, { headers: { Authorization: `Bearer ${m.token}` } });
    m.ws = ws;
    ws.on("open", () => resolve());
    ws.on("message", (data) => onFrame(m, data.toString()));
    ws.on("unexpected-response", (_req, res) => {
      bump(counters.errors, `connect_${res.statusCode}`);
      res.resume();
      ws.terminate();
    });
    ws.on("error", () => {});
    ws.on("close", (code) => {
      bump(counters.closes, String(code));
      m.ws = null;
      m.registered = false;
      m.probes = [];
      m.pings = [];
      resolve();
      if (stopping) return;
      m.retryMs = Math.min(10_000, m.retryMs * 2);
      setTimeout(
        () => {
          counters.reconnects++;
          void connect(m);
        },
        m.retryMs * (0.5 + Math.random()),
      );
    });
  });
}

async function pooled<T>(items: T[], concurrency: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
}

function heartbeatFrame(m: SimMiner): string {
  return JSON.stringify({
    type: "heartbeat",
    inflight: m.round % 3,
    cpu_usage: (m.index * 7 + m.round) % 100,
    memory_mb: 512,
    tokens_per_s: 20,
  });
}

let driver: NodeJS.Timeout | undefined;

/** Spreads the sends evenly: each tick sends to as many miners (round robin) as the interval asks for by now. */
function drive(intervalMs: number, mode: Mode, probesPerS: number): void {
  clearInterval(driver);
  const start = performance.now();
  let done = 0;
  let probesDone = 0;
  let cursor = 0;
  driver = setInterval(() => {
    const elapsed = performance.now() - start;
    const due = Math.floor((elapsed * miners.length) / intervalMs);
    for (; done < due; done++, cursor = (cursor + 1) % miners.length) {
      const m = miners[cursor];
      if (!m.ws || m.ws.readyState !== WebSocket.OPEN || !m.registered) continue;
      m.round++;
      if (mode === "ping") {
        m.pings.push(performance.now());
        m.ws.send(POOL_PING);
        counters.pings++;
        if (m.round % HEARTBEAT_FULL_EVERY !== 0) continue;
      }
      m.ws.send(heartbeatFrame(m));
      counters.sent++;
    }
    for (; probesDone < Math.floor((elapsed * probesPerS) / 1000); probesDone++) {
      const m = miners[Math.floor(Math.random() * miners.length)];
      if (!m.ws || m.ws.readyState !== WebSocket.OPEN || !m.registered || m.probes.length) continue;
      m.probes.push(performance.now());
      m.ws.send(JSON.stringify({ type: "probe" }));
    }
  }, 10);
}

function stats(): SimStats {
  const out: SimStats = {
    ...counters,
    registered: miners.filter((m) => m.token).length,
    connected: miners.filter((m) => m.registered).length,
    assigned: assigned.size,
  };
  counters = freshCounters();
  return out;
}

async function handle(c: SimCommand): Promise<unknown> {
  switch (c.cmd) {
    case "register": {
      url = c.url;
      model = c.model;
      for (let i = c.from; i < c.to; i++) {
        const key = benchKey(i);
        const address = privateKeyToAccount(key).address;
        miners.push({ index: i, address, key, token: null, ws: null, registered: false, probes: [], pings: [], round: 0, retryMs: 500 });
      }
      const t0 = performance.now();
      await pooled(miners, c.concurrency, register);
      return { ms: performance.now() - t0 };
    }
    case "connect": {
      const t0 = performance.now();
      await pooled(miners, c.concurrency, async (m) => {
        await connect(m);
        m.retryMs = 500;
      });
      return { ms: performance.now() - t0 };
    }
    case "drive":
      drive(c.intervalMs, c.mode, c.probesPerS);
      return {};
    case "stats":
      return stats();
    case "peek":
      return { connected: miners.filter((m) => m.registered).length };
    case "stop":
      stopping = true;
      clearInterval(driver);
      for (const m of miners) m.ws?.terminate();
      setTimeout(() => process.exit(0), 100);
      return {};
  }
}

process.on("message", (msg: { id: number; c: SimCommand }) => {
  handle(msg.c).then(
    (result) => process.send!({ id: msg.id, result }),
    (err: Error) => process.send!({ id: msg.id, error: String(err?.stack ?? err) }),
  );
});
