// `npm run bench:router`: the router isolated. The Worker and its Durable Objects under Miniflare's own server
// (no wrangler dev proxy), state on disk (production-like) and in memory; three real miner-agent processes on
// the zero-cost engine (bench-only `--test-engine zero-cost`: one fixed token, no inference); and the same
// client loop (bench/lib/load.ts) against the Portkey AI gateway in front of an instant mock OpenAI server,
// and against the mock directly, in the same run. Prints figures beside the machine's load; asserts nothing.
import { api, freePort } from "../test/helpers/network.ts";
import { signatureLever } from "./lib/levers.ts";
import { call, closedLoop, fx, type LoadResult, pct, setAcceptEncoding, streamed, type Target } from "./lib/load.ts";
import { type Peer, portkeyHeaders, startMock, startPortkey } from "./lib/peers.ts";
import { cpuMs, cpuOf, loadLine } from "./lib/proc.ts";
import { startProfiler } from "./lib/profile.ts";
import { createSession, type Stack, startStack, ZERO_COST_MODEL } from "./lib/stack.ts";
import { stageTable, type TaskSample } from "./lib/stages.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const N_LATENCY = Number(args.get("latency-n") ?? 400);
const SECONDS = Number(args.get("seconds") ?? 8);
const CLIENTS = (args.get("clients") ?? "32,128").split(",").map(Number);
const MINERS = Number(args.get("miners") ?? 3);
const CONCURRENCY = Number(args.get("miner-concurrency") ?? 64);
const N_STREAM = Number(args.get("stream-n") ?? 150);
const N_K = Number(args.get("k-n") ?? 150);
const PERSIST = (args.get("persist") ?? "disk,memory").split(",") as ("disk" | "memory")[];
if (args.has("gzip")) setAcceptEncoding("gzip, deflate");

const epoch = () => performance.timeOrigin + performance.now();
const summary: string[] = [];
const report = (name: string, value: string) => {
  const line = `  ${name.padEnd(66)} ${value}   [${loadLine()}]`;
  summary.push(line);
  console.log(line);
};
const p50p99 = (xs: number[]) => `${fx(pct(xs, 50))} / ${fx(pct(xs, 99))}`;

const completionBody = (i: number) => ({ prompt: `bench ${i % 7}`, max_tokens: 1 });
const mockBody = (i: number) => ({ model: "mock", prompt: `bench ${i % 7}`, max_tokens: 1 });

function targets(stack: Stack, mock: Peer, portkey: Peer): { ours: Target; portkey: Target; direct: Target; ping: Target } {
  return {
    // The Worker's floor: a request that touches no Durable Object.
    ping: { name: "ping", url: `${stack.router.url}/api/v1/ping`, headers: {}, body: () => null },
    ours: {
      name: "ours",
      url: `${stack.router.url}/api/v1/completions`,
      headers: { authorization: "Bearer dev-key" },
      body: completionBody,
    },
    portkey: { name: "portkey", url: `${portkey.url}/v1/completions`, headers: portkeyHeaders(mock), body: mockBody },
    direct: { name: "direct", url: `${mock.url}/v1/completions`, headers: { authorization: "Bearer sk-mock" }, body: mockBody },
  };
}

/** One of our timed requests: its task, its request id (the Worker's log line) and the client's clock. */
type Timed = { id: string; requestId: string; sent: number; received: number };

/**
 * Sequential latency, the three targets interleaved request by request so they share the machine's moods; ours
 * also keeps (send, receive, task id) for the per-stage breakdown.
 */
async function latency(t: ReturnType<typeof targets>, tag: string): Promise<Timed[]> {
  const times: Record<string, number[]> = { ours: [], portkey: [], direct: [], ping: [] };
  const ours: Timed[] = [];
  for (let i = -30; i < N_LATENCY; i++) {
    for (const key of ["direct", "portkey", "ping", "ours"] as const) {
      const sent = epoch();
      const a = await call(t[key], i);
      if (a.status !== 200) throw new Error(`${key}: ${a.status} ${JSON.stringify(a.body).slice(0, 400)}`);
      if (i < 0) continue;
      times[key].push(a.ms);
      if (key === "ours") ours.push({ id: a.body.task_id, requestId: a.body.request_id, sent, received: sent + a.ms });
    }
  }
  console.log(`\n[${tag}] latency: ${N_LATENCY} sequential requests per target, interleaved, max_tokens 1`);
  report(`[${tag}] direct to the mock p50 / p99 (ms)`, p50p99(times.direct));
  report(`[${tag}] Portkey → mock p50 / p99 (ms)`, p50p99(times.portkey));
  report(`[${tag}] ours: GET /api/v1/ping (no Durable Object) p50 / p99 (ms)`, p50p99(times.ping));
  report(`[${tag}] ours (router + zero-cost miner) p50 / p99 (ms)`, p50p99(times.ours));
  const added = (xs: number[]) => `${fx(pct(xs, 50) - pct(times.direct, 50))} / ${fx(pct(xs, 99) - pct(times.direct, 99))}`;
  report(`[${tag}] added over direct p50 / p99 (ms): Portkey`, added(times.portkey));
  report(`[${tag}] added over direct p50 / p99 (ms): ours`, added(times.ours));
  report(
    `[${tag}] ours / Portkey added p50`,
    fx((pct(times.ours, 50) - pct(times.direct, 50)) / (pct(times.portkey, 50) - pct(times.direct, 50))),
  );
  return ours;
}

/** When the Worker built each answer, by request id, from its request-log lines (bench/lib/stages.ts `served`). */
function servedAt(log: string): Map<string, number> {
  const at = new Map<string, number>();
  for (const line of log.split("\n")) {
    if (!line.startsWith('{"msg":"request"')) continue;
    try {
      const l = JSON.parse(line) as { request_id: string; ts: string; latency_ms: number };
      at.set(l.request_id, Date.parse(l.ts) + l.latency_ms);
    } catch {}
  }
  return at;
}

/** Joins our timed requests with their task views and the miners' traces. */
async function breakdown(stack: Stack, ours: Timed[], tag: string): Promise<void> {
  const traces = new Map<string, TaskSample["trace"]>();
  for (const m of stack.miners) {
    for (const e of m.events)
      if (e.event === "task_done" && e.session_id === "default" && e.trace) traces.set(e.task_id as string, e.trace as TaskSample["trace"]);
  }
  const served = servedAt(stack.router.log());
  const samples: TaskSample[] = [];
  for (const o of ours.slice(-200)) {
    const view = await api(stack.router, `/api/v1/tasks/default/${o.id}`);
    const trace = traces.get(o.id);
    if (view.status === 200 && trace && view.body.replicas?.[0]?.committed_at)
      samples.push({ ...o, view: view.body, trace, served: served.get(o.requestId) });
  }
  console.log(`\n[${tag}] where the time goes: ${samples.length} sequential k = 1 tasks`);
  for (const line of stageTable(samples)) console.log(line);
}

async function throughput(stack: Stack, t: ReturnType<typeof targets>, tag: string, peers: { mock: Peer; portkey: Peer }): Promise<void> {
  const workerd = stack.router.workerdPid();
  const minerPids = stack.miners.map((m) => m.process.pid);
  for (const clients of CLIENTS) {
    console.log(`\n[${tag}] throughput: ${clients} closed-loop clients, ${SECONDS} s each, max_tokens 1`);
    const w0 = cpuMs(workerd);
    const m0 = cpuOf(minerPids);
    const ours = await closedLoop(t.ours, clients, SECONDS);
    const w1 = cpuMs(workerd);
    const m1 = cpuOf(minerPids);
    report(`[${tag}] ours, ${clients} clients: tasks/s`, line(ours));
    report(
      `[${tag}] ours, ${clients} clients: CPU ms per task, router (workerd) / miners`,
      `${fx((w1 - w0) / ours.ok)} / ${fx((m1 - m0) / ours.ok)}`,
    );
    if (tag !== "disk") continue; // the peers do not change with our state's persistence: measured once
    const p0 = cpuMs(peers.portkey.pid);
    const pk = await closedLoop(t.portkey, clients, SECONDS);
    report(`[${tag}] Portkey → mock, ${clients} clients: requests/s`, line(pk));
    report(`[${tag}] Portkey, ${clients} clients: CPU ms per request (gateway)`, fx((cpuMs(peers.portkey.pid) - p0) / pk.ok));
    report(`[${tag}] direct to the mock, ${clients} clients: requests/s`, line(await closedLoop(t.direct, clients, SECONDS)));
  }
}

const line = (r: LoadResult) =>
  `${fx(r.perSecond, 1)} (${r.ok} ok, ${r.failed} failed; p50 ${fx(pct(r.latencies, 50))} p99 ${fx(pct(r.latencies, 99))} ms)${r.firstFailure ? ` first failure: ${r.firstFailure}` : ""}`;

/** Streamed completions: client time to first text, less the miner's own first token (the quorum's, k > 1). */
async function streaming(stack: Stack, t: ReturnType<typeof targets>, tag: string): Promise<void> {
  const ttft: number[] = [];
  const done: number[] = [];
  const overhead: number[] = [];
  const direct: number[] = [];
  /** Per interleaved pair: our overhead less the direct mock's own time to first text (the client's HTTP round trip). */
  const added: number[] = [];
  const ours = { ...t.ours, body: (i: number) => ({ ...completionBody(i), stream: true }) };
  const mock = { ...t.direct, body: (i: number) => ({ ...mockBody(i), stream: true }) };
  for (let i = -10; i < N_STREAM; i++) {
    const d = await streamed(mock, i, '"text":"');
    const s = await streamed(ours, i, '"text":"');
    if (i < 0) continue;
    direct.push(d.ttft);
    ttft.push(s.ttft);
    done.push(s.total);
    const id = /"task_id":"(\d+)"/.exec(s.raw)?.[1];
    const view = id ? await api(stack.router, `/api/v1/tasks/default/${id}`) : undefined;
    const first = view?.body.replicas?.[0]?.first_token_ms;
    if (typeof first === "number") {
      overhead.push(s.ttft - first);
      added.push(s.ttft - first - d.ttft);
    }
  }
  console.log(`\n[${tag}] streaming: ${N_STREAM} sequential streamed completions, max_tokens 1`);
  report(`[${tag}] direct to the mock: time to first text p50 / p99 (ms)`, p50p99(direct));
  report(`[${tag}] ours: time to first text p50 / p99 (ms)`, p50p99(ttft));
  report(`[${tag}] ours: TTFT overhead p50 / p99 (ms, client − miner's first token)`, p50p99(overhead));
  // As added latency is counted: over what the same client takes to get a first text from the mock directly.
  report(`[${tag}] ours: TTFT added over direct p50 / p99 (ms, per pair: overhead − direct's time to first text)`, p50p99(added));
  report(`[${tag}] ours: streamed completion to [DONE] p50 / p99 (ms; after close and the signed receipt)`, p50p99(done));
}

/** k = 3 against k = 1 on the same three miners, interleaved. */
async function redundancy(stack: Stack, tag: string): Promise<void> {
  const sids = { 1: await createSession(stack.router, 1, MINERS), 3: await createSession(stack.router, 3, MINERS) };
  const times: Record<1 | 3, number[]> = { 1: [], 3: [] };
  for (let i = -10; i < N_K; i++) {
    for (const k of [1, 3] as const) {
      const a = await call(
        {
          name: `k${k}`,
          url: `${stack.router.url}/api/v1/completions/${sids[k]}`,
          headers: { authorization: "Bearer dev-key" },
          body: completionBody,
        },
        i,
      );
      if (a.status !== 200) throw new Error(`k = ${k}: ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
      if (i >= 0) times[k].push(a.ms);
    }
  }
  console.log(`\n[${tag}] redundancy: ${N_K} sequential completions each at k = 1 and k = 3, interleaved`);
  report(`[${tag}] k = 1 p50 / p99 (ms)`, p50p99(times[1]));
  report(`[${tag}] k = 3 p50 / p99 (ms)`, p50p99(times[3]));
  report(`[${tag}] k = 3 / k = 1 (p50)`, fx(pct(times[3], 50) / pct(times[1], 50)));
}

/** workerd's JavaScript CPU under 32 clients, by module and by function (sampling adds its own cost: figures only). */
async function profile(stack: Stack, t: ReturnType<typeof targets>, inspectorPort: number, tag: string): Promise<void> {
  const profiler = await startProfiler(inspectorPort, stack.router.bundlePath);
  const r = await closedLoop(t.ours, 32, SECONDS);
  const p = await profiler.stop();
  console.log(`\n[${tag}] workerd JavaScript self time while profiling (${r.ok} tasks): ${fx(p.totalMs / r.ok)} ms per task`);
  for (const m of p.byModule) console.log(`  ${m.name.padEnd(70)} ${fx(m.ms / r.ok, 3)} ms/task  ${fx((100 * m.ms) / p.totalMs, 1)}%`);
  console.log("  top functions:");
  for (const f of p.top) console.log(`  ${f.name.slice(0, 90).padEnd(90)} ${fx(f.ms / r.ok, 3)} ms/task`);
  console.log("  the project's functions, with all they called (inclusive):");
  for (const f of p.inclusive) console.log(`  ${f.name.slice(0, 90).padEnd(90)} ${fx(f.ms / r.ok, 3)} ms/task`);
}

async function run(persist: "disk" | "memory", peers: { mock: Peer; portkey: Peer }): Promise<void> {
  const inspectorPort = await freePort();
  const stack = await startStack({ persist, miners: MINERS, concurrency: CONCURRENCY, inspectorPort });
  try {
    const nodes = (await api(stack.router, "/api/v1/miners")).body.nodes as { name: string; models: string[] }[];
    console.log(
      `\n[${persist}] router under Miniflare, state ${persist === "disk" ? "on disk" : "in memory"}; miners: ${nodes.map((n) => `${n.name} [${n.models.join(", ")}]`).join(", ")}`,
    );
    if (!nodes.every((n) => n.models.includes(ZERO_COST_MODEL))) throw new Error("a miner is not on the zero-cost engine");
    const t = targets(stack, peers.mock, peers.portkey);
    const ours = await latency(t, persist);
    await breakdown(stack, ours, persist);
    await throughput(stack, t, persist, peers);
    await streaming(stack, t, persist);
    if (MINERS >= 3) await redundancy(stack, persist);
    if (persist === "disk" && !args.has("no-profile")) await profile(stack, t, inspectorPort, persist);
  } finally {
    await stack.stop();
  }
}

console.log(`bench:router on ${process.platform} ${process.arch}, node ${process.version}, ${loadLine()}`);
console.log(
  `clients ask for ${args.has("gzip") ? "gzip (Miniflare compresses our answers in workerd)" : "no compression (identity; --gzip for gzip)"}`,
);
console.log(`\nsignature lever (Node, ${loadLine()}):`);
for (const l of await signatureLever()) {
  summary.push(l);
  console.log(l);
}
const peers = { mock: await startMock(), portkey: await startPortkey() };
try {
  for (const persist of PERSIST) await run(persist, peers);
} finally {
  peers.mock.stop();
  peers.portkey.stop();
}
console.log("\nsummary");
for (const l of summary) console.log(l);
process.exit(0);
