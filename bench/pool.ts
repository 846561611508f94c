// `npm run bench:pool`: a load simulation of the miner pool. Starts the router under Miniflare's own server
// (bench/lib/miniflare-router.ts: workerd with the real Durable Objects and SQLite, no `wrangler dev` proxy, whose
// proxy stalled at 9,000–10,000 sockets; `--server=wrangler` keeps the old way), with POOL_SHARDS = --shards, forks a few
// processes of simulated miners (bench/pool-sim.ts: real wallets, real registration, the real pool channel),
// creates a few sessions for their model (so the pool assigns miners and pushes `sessions`), then drives
// heartbeats at each requested rate and reports per step:
//   offered heartbeat frames/s and pings/s; heartbeat lag (round trip of a frame the pool answers itself, which
//   queues behind the heartbeats) and ping round trip; GET /api/v1/miners?limit=100 and /api/v1/status p50/p99;
//   workerd CPU (whole process, and its busiest thread ≈ the pool object's) and RSS, from /proc.
// With --restart it stops the router and starts it again on the same state and port, and reports how long the
// miners take to be back (they reconnect with their tokens), and /miners during the reconnect storm.
// Prints figures and a JSON summary; asserts nothing. The machine's load average is printed beside each figure.
//
//   --miners=N       simulated miners (default 2000)        --procs=P        miner processes (default 3)
//   --rates=a,b,...  heartbeat frames/s per step (default: one step at miners / 5 s)
//   --mode=heartbeat|ping   what miners send each interval (ping: liveness pings + a JSON heartbeat every 12th)
//   --duration=S     measured seconds per step (default 20), after --warm=S (default 5)
//   --sessions=K     sessions created for the bench model (default 4)   --restart   measure a router restart
//   --heartbeat-ms=MS  the router's HEARTBEAT_MS (default 5000)   --out=FILE  also write the JSON summary there
//   --shards=S       POOL_SHARDS (default 1)   --server=miniflare|wrangler (default miniflare)
//   --restart-wait=S how long the restart waits for every miner to be back (default 120)
// Under Miniflare every object of the Worker runs in one workerd isolate, i.e. one thread: the shards share it here
// (on Cloudflare each is its own), so the figures per shard are the totals divided by S (the printed spread shows
// how evenly the miners' addresses fall).

import { type ChildProcess, fork } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { privateKeyToAccount } from "viem/accounts";
import { shardOf } from "../shared/pool-shard.ts";
import { API_KEY, startRouter } from "../test/helpers/network.ts";
import { startMiniflareRouter } from "./lib/miniflare-router.ts";
import { workerdProcesses } from "./lib/proc.ts";
import { benchKey, type SimCommand, type SimStats } from "./pool-sim.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const MINERS = Number(args.get("miners") ?? 2000);
const PROCS = Number(args.get("procs") ?? 3);
const MODE = (args.get("mode") ?? "heartbeat") as "heartbeat" | "ping";
const DURATION_S = Number(args.get("duration") ?? 20);
const WARM_S = Number(args.get("warm") ?? 5);
const SESSIONS = Number(args.get("sessions") ?? 4);
const HEARTBEAT_MS = Number(args.get("heartbeat-ms") ?? 5000);
const RATES = (args.get("rates") ?? String(Math.round((MINERS * 1000) / HEARTBEAT_MS))).split(",").map(Number);
const SHARDS = Number(args.get("shards") ?? 1);
const SERVER = (args.get("server") ?? "miniflare") as "miniflare" | "wrangler";
const RESTART_WAIT_S = Number(args.get("restart-wait") ?? 120);
const MODEL = "bench/pool-model";
const NO_LIMIT = 100_000_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const pct = (xs: number[], p: number) => {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const r1 = (n: number) => Math.round(n * 10) / 10;

// ── simulated miner processes ────────────────────────────────────────────────────────────────────────────────

interface Sim {
  child: ChildProcess;
  ask(c: SimCommand): Promise<unknown>;
}

function forkSim(): Sim {
  const child = fork(join(import.meta.dirname, "pool-sim.ts"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  child.on("message", (m: { id: number; result?: unknown; error?: string }) => {
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.error) w?.reject(new Error(m.error));
    else w?.resolve(m.result);
  });
  const ask = (c: SimCommand) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      child.send({ id, c });
    });
  return { child, ask };
}

async function statsOf(sims: Sim[]): Promise<SimStats> {
  const all = (await Promise.all(sims.map((s) => s.ask({ cmd: "stats" })))) as SimStats[];
  const merge = (a: Record<string, number>, b: Record<string, number>) => {
    for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
    return a;
  };
  return all.reduce((a, b) => ({
    registered: a.registered + b.registered,
    connected: a.connected + b.connected,
    sent: a.sent + b.sent,
    pings: a.pings + b.pings,
    probeRtts: a.probeRtts.concat(b.probeRtts),
    pingRtts: a.pingRtts.concat(b.pingRtts),
    errors: merge({ ...a.errors }, b.errors),
    closes: merge({ ...a.closes }, b.closes),
    sessionsMsgs: a.sessionsMsgs + b.sessionsMsgs,
    assigned: a.assigned + b.assigned,
    reconnects: a.reconnects + b.reconnects,
  }));
}

// ── the router: Miniflare's server, or wrangler dev ─────────────────────────────────────────────────────────

interface BenchRouter {
  url: string;
  /** The workerd processes serving it (for their CPU time). */
  pids(): number[];
  /** Restarts the runtime on the same state: every object (every shard) is evicted and every socket cut. */
  restart(): Promise<BenchRouter>;
  stop(): Promise<void>;
}

const vars = () => ({ HEARTBEAT_MS: String(HEARTBEAT_MS), POOL_SHARDS: String(SHARDS) });

async function miniflareRouter(): Promise<BenchRouter> {
  // workerd's compatibility dates stop at its build: the installed miniflare's is older than wrangler.toml's date.
  const mf = await startMiniflareRouter({ persist: "disk", vars: vars(), rateLimit: NO_LIMIT, compatibilityDate: "2026-08-06" });
  const router: BenchRouter = {
    url: mf.url,
    pids: () => [mf.workerdPid()].filter((p): p is number => p !== undefined),
    restart: async () => {
      await mf.restart();
      return router;
    },
    stop: () => mf.stop(),
  };
  return router;
}

async function wranglerRouter(opts: { port?: number; persistDir?: string } = {}): Promise<BenchRouter> {
  const r = await startRouter({ ...opts, vars: vars(), rateLimits: limits() });
  return {
    url: r.url,
    pids: () => workerdPids(r.process.pid),
    restart: async () => {
      await r.stop();
      return wranglerRouter({ port: r.port, persistDir: r.persistDir });
    },
    stop: async () => {
      await r.stop();
      rmSync(r.persistDir, { recursive: true, force: true });
    },
  };
}

// ── workerd CPU from /proc ─────────────────────────────────────────────────────────────────────────────────

/** workerd processes of a process group (wrangler starts them detached under its own group). */
const workerdPids = (group: number | undefined): number[] =>
  workerdProcesses()
    .filter((w) => w.group === group)
    .map((w) => w.pid);

interface CpuSample {
  at: number;
  threads: Map<string, number>;
  rssMb: number;
}

function cpuSample(pids: number[]): CpuSample {
  const threads = new Map<string, number>();
  let rssMb = 0;
  for (const pid of pids) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        threads.set(`${pid}/${tid}`, Number(f[11]) + Number(f[12]));
      }
      rssMb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
    } catch {}
  }
  return { at: performance.now(), threads, rssMb };
}

/** Percent of one core: the whole workerd, and its busiest thread. */
function cpuBetween(a: CpuSample, b: CpuSample): { total: number; busiest: number; rssMb: number } {
  const secs = (b.at - a.at) / 1000;
  let total = 0;
  let busiest = 0;
  for (const [k, ticks] of b.threads) {
    const d = ticks - (a.threads.get(k) ?? 0);
    total += d;
    busiest = Math.max(busiest, d);
  }
  return { total: r1(total / secs), busiest: r1(busiest / secs), rssMb: Math.round(b.rssMb) };
}

// ── REST latency ───────────────────────────────────────────────────────────────────────────────────────────

/** Calls `path` back to back until `until`; latencies of the 200s, and the rest counted. */
async function pollLatency(base: string, path: string, until: { at: number }): Promise<{ ms: number[]; failed: number }> {
  const ms: number[] = [];
  let failed = 0;
  while (performance.now() < until.at) {
    const t0 = performance.now();
    try {
      const res = await fetch(`${base}${path}`, { headers: { Authorization: `Bearer ${API_KEY}` }, signal: AbortSignal.timeout(60_000) });
      await res.arrayBuffer();
      if (res.ok) ms.push(performance.now() - t0);
      else failed++;
    } catch {
      failed++;
    }
    await sleep(200);
  }
  return { ms, failed };
}

const latencyLine = (l: { ms: number[]; failed: number }) => ({
  p50: r1(pct(l.ms, 50)),
  p99: r1(pct(l.ms, 99)),
  n: l.ms.length,
  failed: l.failed,
});

// ── phases ─────────────────────────────────────────────────────────────────────────────────────────────────

async function createSessions(base: string): Promise<void> {
  for (let i = 0; i < SESSIONS; i++) {
    const res = await fetch(`${base}/api/v1/sessions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, max_miners: 50, deposit: 1_000_000 }),
    });
    if (res.status !== 201) throw new Error(`session create: ${res.status} ${await res.text()}`);
  }
}

async function waitConnected(sims: Sim[], timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const peeks = (await Promise.all(sims.map((s) => s.ask({ cmd: "peek" })))) as { connected: number }[];
    if (peeks.reduce((a, p) => a + p.connected, 0) >= MINERS) return performance.now() - t0;
    await sleep(500);
  }
  return Number.NaN;
}

async function measureStep(router: BenchRouter, sims: Sim[], rate: number) {
  const intervalMs = (MINERS * 1000) / rate;
  const probesPerS = Math.max(5, Math.round(20 / sims.length));
  await Promise.all(sims.map((s) => s.ask({ cmd: "drive", intervalMs, mode: MODE, probesPerS })));
  await sleep(WARM_S * 1000);
  await statsOf(sims);
  const pids = router.pids();
  const c0 = cpuSample(pids);
  const until = { at: performance.now() + DURATION_S * 1000 };
  const [miners, status] = await Promise.all([
    pollLatency(router.url, "/api/v1/miners?limit=100", until),
    pollLatency(router.url, "/api/v1/status", until),
  ]);
  const secs = (performance.now() - c0.at) / 1000;
  const cpu = cpuBetween(c0, cpuSample(pids));
  const s = await statsOf(sims);
  return {
    rate,
    interval_ms: Math.round(intervalMs),
    heartbeats_per_s: r1(s.sent / secs),
    pings_per_s: r1(s.pings / secs),
    lag_ms: { p50: r1(pct(s.probeRtts, 50)), p99: r1(pct(s.probeRtts, 99)), n: s.probeRtts.length },
    ping_rtt_ms: { p50: r1(pct(s.pingRtts, 50)), p99: r1(pct(s.pingRtts, 99)), n: s.pingRtts.length },
    miners_ms: latencyLine(miners),
    status_ms: latencyLine(status),
    workerd_cpu_pct: cpu,
    connected: s.connected,
    assigned: s.assigned,
    errors: s.errors,
    closes: s.closes,
    load: load(),
  };
}

async function measureRestart(router: BenchRouter, sims: Sim[]): Promise<{ router: BenchRouter; result: unknown }> {
  // At one heartbeat per HEARTBEAT_MS each, whatever the last step drove.
  await Promise.all(sims.map((s) => s.ask({ cmd: "drive", intervalMs: HEARTBEAT_MS, mode: MODE, probesPerS: 5 })));
  await sleep(WARM_S * 1000);
  await statsOf(sims);
  const t0 = performance.now();
  const next = await router.restart();
  const readyMs = performance.now() - t0;
  const until = { at: performance.now() + RESTART_WAIT_S * 1000 };
  const poll = pollLatency(next.url, "/api/v1/miners?limit=100", until);
  const backMs = await waitConnected(sims, RESTART_WAIT_S * 1000);
  until.at = 0;
  const miners = await poll;
  const pids = next.pids();
  const c0 = cpuSample(pids);
  await sleep(5000);
  const cpuAfter = cpuBetween(c0, cpuSample(pids));
  const s = await statsOf(sims);
  return {
    router: next,
    result: {
      router_ready_ms: Math.round(readyMs),
      all_back_ms_after_ready: Math.round(backMs),
      reconnects: s.reconnects,
      closes: s.closes,
      errors: s.errors,
      miners_during_storm: latencyLine(miners),
      cpu_after_back: cpuAfter,
      load: load(),
    },
  };
}

const limits = () => ({
  RATE_LIMIT_IP: NO_LIMIT,
  RATE_LIMIT_KEY: NO_LIMIT,
  RATE_LIMIT_MINER: NO_LIMIT,
  RATE_LIMIT_AUTH_FAILURES: NO_LIMIT,
});

/** Miners per shard (the bench's wallets are fixed, so this is the same every run). */
function spread(): number[] {
  const counts = new Array<number>(SHARDS).fill(0);
  for (let i = 0; i < MINERS; i++) counts[shardOf(privateKeyToAccount(benchKey(i)).address, SHARDS)]++;
  return counts;
}

async function main(): Promise<void> {
  console.log(
    `bench:pool  miners=${MINERS} shards=${SHARDS} server=${SERVER} procs=${PROCS} mode=${MODE} rates=${RATES.join(",")} load=${load()}`,
  );
  let router = SERVER === "miniflare" ? await miniflareRouter() : await wranglerRouter();
  const sims = Array.from({ length: PROCS }, forkSim);
  const perShard = spread();
  const summary: Record<string, unknown> = { miners: MINERS, mode: MODE, shards: SHARDS, server: SERVER, miners_per_shard: perShard };
  console.log("miners per shard", perShard.join(","));
  try {
    const per = Math.ceil(MINERS / PROCS);
    const t0 = performance.now();
    await Promise.all(
      sims.map((s, i) =>
        s.ask({ cmd: "register", url: router.url, from: i * per, to: Math.min(MINERS, (i + 1) * per), concurrency: 8, model: MODEL }),
      ),
    );
    const regS = (performance.now() - t0) / 1000;
    summary.registration = { per_s: r1(MINERS / regS), seconds: r1(regS), load: load() };
    console.log("registration", summary.registration);
    await createSessions(router.url);
    // Miners heartbeat from their first `registered` on, at one per HEARTBEAT_MS, as the agent does.
    await Promise.all(sims.map((s) => s.ask({ cmd: "drive", intervalMs: HEARTBEAT_MS, mode: MODE, probesPerS: 5 })));
    const t1 = performance.now();
    await Promise.all(sims.map((s) => s.ask({ cmd: "connect", concurrency: 16 })));
    const backMs = await waitConnected(sims, 300_000);
    summary.connect = {
      per_s: r1(MINERS / ((performance.now() - t1) / 1000)),
      all_registered_ms: Math.round(performance.now() - t1),
      waited_ms: Math.round(backMs),
      load: load(),
    };
    console.log("connect", summary.connect);
    const steps = [];
    for (const rate of RATES) {
      const step = await measureStep(router, sims, rate);
      // The busiest shard's share of the frames; CPU per shard assumes the thread's time splits like the miners.
      const share = Math.max(...perShard) / MINERS;
      const busiest_shard = {
        heartbeats_per_s: r1(step.heartbeats_per_s * share),
        pings_per_s: r1(step.pings_per_s * share),
        cpu_pct: r1(step.workerd_cpu_pct.busiest * share),
      };
      steps.push({ ...step, busiest_shard });
      console.log(JSON.stringify({ ...step, busiest_shard }));
      if (step.lag_ms.p99 > 20_000) break;
    }
    summary.steps = steps;
    if (args.has("restart")) {
      const { router: next, result } = await measureRestart(router, sims);
      router = next;
      summary.restart = result;
      console.log("restart", JSON.stringify(result));
    }
  } finally {
    await Promise.all(sims.map((s) => s.ask({ cmd: "stop" }).catch(() => {})));
    await router.stop();
  }
  if (args.get("out")) writeFileSync(args.get("out")!, JSON.stringify(summary, null, 2));
  console.log(JSON.stringify(summary));
}

await main();
