// `npm run bench:floor`: what the router's shape costs before any of its code runs. A Worker that only hands each
// request to one SQLite-backed Durable Object over RPC, which sends it over a hibernatable WebSocket to a miner
// process answering at once (bench/lib/floor-worker.js, bench/lib/floor-miner.ts), under the same Miniflare and
// workerd as bench:router, state on disk. It runs with 0, 1 and 2 durable writes per task, beside the real router
// (three zero-cost miner-agents), the Portkey gateway in front of the instant mock, and the mock directly, with the
// same client loop (bench/lib/load.ts), interleaved. Prints figures beside the machine's load; asserts nothing.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { Log, LogLevel, Miniflare } from "miniflare";
import { freePort, ROOT, tempDir } from "../test/helpers/network.ts";
import { call, closedLoop, fx, pct, streamed, type Target } from "./lib/load.ts";
import { childWorkerds } from "./lib/miniflare-router.ts";
import { type Peer, portkeyHeaders, startMock, startPortkey } from "./lib/peers.ts";
import { cpuMs, loadLine } from "./lib/proc.ts";
import { type Stack, startStack } from "./lib/stack.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const N_LATENCY = Number(args.get("latency-n") ?? 400);
const SECONDS = Number(args.get("seconds") ?? 8);
const CLIENTS = (args.get("clients") ?? "32").split(",").map(Number);
const N_STREAM = Number(args.get("stream-n") ?? 150);
const MINERS = 3;
const WITH_OURS = !args.has("no-ours");

interface Floor {
  url: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

async function startFloor(): Promise<Floor> {
  const before = new Set(childWorkerds());
  const state = tempDir("bench-floor-state");
  const mf = new Miniflare({
    modules: true,
    scriptPath: join(ROOT, "bench/lib/floor-worker.js"),
    compatibilityDate: "2026-08-06", // as bench/lib/stack.ts: the installed workerd's newest
    durableObjects: { FLOOR: { className: "Floor", useSQLite: true } },
    durableObjectsPersist: join(state, "do"),
    host: "127.0.0.1",
    port: await freePort(),
    cf: false,
    log: new Log(LogLevel.WARN),
  });
  const url = (await mf.ready).origin;
  const pid = childWorkerds().find((p) => !before.has(p));
  const miners: ChildProcess[] = [];
  for (let i = 0; i < MINERS; i++) {
    const child = spawn(process.execPath, [join(ROOT, "bench/lib/floor-miner.ts"), `--url=${url.replace("http", "ws")}/miner`], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    process.once("exit", () => child.kill("SIGKILL"));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`floor miner exited ${code}`)));
    });
    miners.push(child);
  }
  return {
    url,
    pid,
    stop: async () => {
      for (const m of miners) m.kill("SIGKILL");
      await mf.dispose();
    },
  };
}

const body = (i: number) => ({ model: "mock", prompt: `bench ${i % 7}`, max_tokens: 1 });

function targets(floor: Floor, mock: Peer, portkey: Peer, stack: Stack | undefined): Target[] {
  const floorTarget = (writes: number): Target => ({
    name: `floor, ${writes} writes`,
    url: `${floor.url}/v1/completions?writes=${writes}`,
    headers: {},
    body,
  });
  return [
    { name: "direct", url: `${mock.url}/v1/completions`, headers: { authorization: "Bearer sk-mock" }, body },
    { name: "Portkey", url: `${portkey.url}/v1/completions`, headers: portkeyHeaders(mock), body },
    floorTarget(0),
    floorTarget(1),
    floorTarget(2),
    ...(stack
      ? [
          {
            name: "ours",
            url: `${stack.router.url}/api/v1/completions`,
            headers: { authorization: "Bearer dev-key" },
            body: (i: number) => ({ prompt: `bench ${i % 7}`, max_tokens: 1 }),
          },
        ]
      : []),
  ];
}

const summary: string[] = [];
const report = (name: string, value: string) => {
  const line = `  ${name.padEnd(58)} ${value}   [${loadLine()}]`;
  summary.push(line);
  console.log(line);
};

/** Sequential requests, every target in turn, so they share the machine's moods. */
async function latency(ts: Target[]): Promise<void> {
  const times = new Map<string, number[]>(ts.map((t) => [t.name, []]));
  for (let i = -30; i < N_LATENCY; i++) {
    for (const t of ts) {
      const a = await call(t, i);
      if (a.status !== 200) throw new Error(`${t.name}: ${a.status} ${JSON.stringify(a.body).slice(0, 400)}`);
      if (i >= 0) times.get(t.name)!.push(a.ms);
    }
  }
  console.log(`\nlatency: ${N_LATENCY} sequential requests per target, interleaved`);
  const direct = times.get("direct")!;
  const added = (xs: number[], p: number) => pct(xs, p) - pct(direct, p);
  const portkey = times.get("Portkey")!;
  for (const t of ts) {
    const xs = times.get(t.name)!;
    const extra = t.name === "direct" ? "" : `; added ${fx(added(xs, 50))} / ${fx(added(xs, 99))}`;
    const ratio =
      t.name === "direct" || t.name === "Portkey"
        ? ""
        : `; added / Portkey's: p50 ${fx(added(xs, 50) / added(portkey, 50))}, p99 ${fx(added(xs, 99) / added(portkey, 99))}`;
    report(`${t.name}: p50 / p99 ms`, `${fx(pct(xs, 50))} / ${fx(pct(xs, 99))}${extra}${ratio}`);
  }
}

/**
 * Streamed requests, interleaved: time to the first chunk carrying text from the mock directly, from the floor (the
 * object streams the miner's text back over RPC after one durable write) and from the router, each less the direct
 * mock's own time in the same round (as added latency is counted).
 */
async function streaming(ts: Target[]): Promise<void> {
  const floorViaFetch = ts
    .filter((t) => t.name === "floor, 1 writes")
    .map((t) => ({ ...t, name: "floor (1 write), object answers via fetch", url: `${t.url}&via=fetch` }));
  const streamedTargets = [
    ...ts.filter((t) => t.name === "direct" || t.name === "floor, 1 writes" || t.name === "ours"),
    ...floorViaFetch,
  ].map((t) => ({ ...t, body: (i: number) => ({ ...(t.body(i) as object), stream: true }) }));
  const times = new Map<string, number[]>(streamedTargets.map((t) => [t.name, []]));
  const added = new Map<string, number[]>(streamedTargets.map((t) => [t.name, []]));
  for (let i = -10; i < N_STREAM; i++) {
    let direct = 0;
    for (const t of streamedTargets) {
      const s = await streamed(t, i, '"text":"');
      if (t.name === "direct") direct = s.ttft;
      if (i < 0) continue;
      times.get(t.name)!.push(s.ttft);
      added.get(t.name)!.push(s.ttft - direct);
    }
  }
  console.log(`\nstreaming: ${N_STREAM} sequential streamed requests per target, interleaved`);
  for (const t of streamedTargets) {
    const extra =
      t.name === "direct"
        ? ""
        : `; added over direct per pair p50 / p99 ${fx(pct(added.get(t.name)!, 50))} / ${fx(pct(added.get(t.name)!, 99))}`;
    report(
      `${t.name === "floor, 1 writes" ? "floor (1 write), RPC stream" : t.name}: time to first text p50 / p99 ms`,
      `${fx(pct(times.get(t.name)!, 50))} / ${fx(pct(times.get(t.name)!, 99))}${extra}`,
    );
  }
}

async function throughput(ts: Target[], pids: Record<string, number | undefined>): Promise<void> {
  for (const clients of CLIENTS) {
    console.log(`\nthroughput: ${clients} closed-loop clients, ${SECONDS} s per target`);
    for (const t of ts) {
      const pid = pids[t.name];
      const c0 = cpuMs(pid);
      const r = await closedLoop(t, clients, SECONDS);
      const cpu = pid ? `; CPU ${fx((cpuMs(pid) - c0) / r.ok)} ms per request (${t.name === "Portkey" ? "gateway" : "workerd"})` : "";
      const failed = r.failed ? `, ${r.failed} failed: ${r.firstFailure}` : "";
      report(`${t.name}, ${clients} clients: per s`, `${fx(r.perSecond, 1)} (p50 ${fx(pct(r.latencies, 50))} ms${failed})${cpu}`);
    }
  }
}

console.log(`bench:floor on ${process.platform} ${process.arch}, node ${process.version}, ${loadLine()}`);
const mock = await startMock();
const portkey = await startPortkey();
const floor = await startFloor();
const stack = WITH_OURS ? await startStack({ persist: "disk", miners: MINERS, concurrency: 64 }) : undefined;
try {
  const ts = targets(floor, mock, portkey, stack);
  await latency(ts);
  await streaming(ts);
  const workerd: Record<string, number | undefined> = { Portkey: portkey.pid, ours: stack?.router.workerdPid() };
  for (const w of [0, 1, 2]) workerd[`floor, ${w} writes`] = floor.pid;
  await throughput(ts, workerd);
} finally {
  await stack?.stop();
  await floor.stop();
  mock.stop();
  portkey.stop();
}
console.log("\nsummary");
for (const l of summary) console.log(l);
process.exit(0);
