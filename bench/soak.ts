// `npm run bench:soak`: steady load under faults. The router under Miniflare (state on disk), three real
// miner-agent processes on the zero-cost engine (`--test-engine zero-cost`: no inference, so the soak is about
// the protocol, not the model), closed-loop clients on the default session (k = 1). A baseline phase without
// faults, then ≥ `--tasks` completions while a random miner is SIGKILLed and restarted (same wallet) every few
// seconds and the router's runtime is restarted (every SessionQueue evicted) now and then. Afterwards every task the session holds is
// audited. Reports lost tasks, duplicated results, requests or tasks that ended without an explicit status, and
// latency with and without the chaos. A benchmark: it prints figures, it asserts nothing.
import type { Miner } from "../test/helpers/network.ts";
import { api } from "../test/helpers/network.ts";
import { call, fx, pct, type Target } from "./lib/load.ts";
import { loadLine } from "./lib/proc.ts";
import { type Stack, startStack } from "./lib/stack.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const TASKS = Number(args.get("tasks") ?? 10_000);
const BASELINE = Number(args.get("baseline-tasks") ?? 1_500);
const CLIENTS = Number(args.get("clients") ?? 16);
const MINERS = Number(args.get("miners") ?? 3);
const CONCURRENCY = Number(args.get("miner-concurrency") ?? 16);
const KILL_MIN_S = Number(args.get("kill-min-s") ?? 2);
const KILL_MAX_S = Number(args.get("kill-max-s") ?? 6);
const EVICT_EVERY_S = Number(args.get("evict-every-s") ?? 20);
const TERMINAL = new Set(["closed", "failed"]);

/** Seconds since the soak started, to line faults up with slow tasks. */
const t00 = Date.now();
const clock = () => ((Date.now() - t00) / 1000).toFixed(1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const between = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

interface Outcome {
  phase: "baseline" | "chaos";
  ms: number;
  status: number;
  /**
   * The error code of an explicit refusal or failure; "cut" when the connection broke (a router restart) before
   * any answer; "none" when an answer came without an explicit status.
   */
  code: string;
  taskId?: string;
}

/** A fetch failure with its cause (undici puts the socket's error there). */
function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return `${String(err)}${cause ? ` (cause: ${cause.code ?? ""} ${cause.message ?? ""})` : ""}`;
}

/** The first answer of each phase that carried no explicit status (printed by the audit). */
const firstSilent: Partial<Record<Outcome["phase"], string>> = {};

/** Closed-loop clients until `n` requests of this phase have answered (explicitly or not). */
async function load(t: Target, phase: Outcome["phase"], n: number, out: Outcome[]): Promise<void> {
  let started = 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      while (started < n) {
        const i = started++;
        const a = await call(t, c * 1_000_000 + i).catch((err: unknown) => ({ status: 0, ms: 0, body: describe(err) }));
        // Status 0: the connection broke (a router restart cut the request); the client backs off a little.
        const code =
          a.status === 200 ? "ok" : typeof a.body?.error?.code === "string" ? a.body.error.code : a.status === 0 ? "cut" : "none";
        if (code === "cut") await sleep(250);
        out.push({ phase, ms: a.ms, status: a.status, code, taskId: a.body?.task_id ?? a.body?.error?.details?.task_id });
        if (code === "none" || code === "cut") firstSilent[phase] ??= `${a.status} ${String(JSON.stringify(a.body)).slice(0, 200)}`;
      }
    }),
  );
}

/** SIGKILLs a random miner every few seconds and restarts it with its wallet; restarts the router now and then. */
async function chaos(stack: Stack, running: () => boolean, log: string[]): Promise<void> {
  const kills = async () => {
    while (running()) {
      await sleep(between(KILL_MIN_S, KILL_MAX_S) * 1000);
      if (!running()) break;
      const i = Math.floor(Math.random() * stack.miners.length);
      const victim: Miner = stack.miners[i];
      victim.process.kill("SIGKILL");
      await victim.exited;
      log.push(`kill miner ${i} @${clock()}`);
      await sleep(between(200, 1500));
      stack.miners[i] = await stack.startMiner(i);
    }
  };
  const evictions = async () => {
    while (running()) {
      await sleep(EVICT_EVERY_S * 1000);
      if (running()) log.push(`${await evictOrRestart(stack)} @${clock()}`);
    }
  };
  await Promise.all([kills(), evictions()]);
}

/**
 * Evicts every SessionQueue by restarting the runtime (a router crash: every object evicted, every socket and
 * request cut, the state on disk kept). Miniflare's own eviction (`unsafeEvictDurableObject`) waits for the
 * object's in-flight requests, which a queue under load always has, and stalls the object for ~30 s while it
 * waits: a bench artifact, so it is not used.
 */
async function evictOrRestart(stack: Stack): Promise<string> {
  const t0 = performance.now();
  await stack.router.restart();
  return `restart router (${fx(performance.now() - t0, 0)} ms)`;
}

/** Every task of the default session, newest first, through the public list route. */
async function allTasks(stack: Stack): Promise<{ task_id: string; status: string; redundancy: number; replicas: { state: string }[] }[]> {
  const out: { task_id: string; status: string; redundancy: number; replicas: { state: string }[] }[] = [];
  let before: string | undefined;
  for (;;) {
    const page = await api(stack.router, `/api/v1/tasks/default?limit=500${before ? `&before=${before}` : ""}`);
    if (page.status !== 200) throw new Error(`task list: ${page.status} ${JSON.stringify(page.body).slice(0, 300)}`);
    out.push(...page.body.tasks);
    if (page.body.tasks.length < 500) return out;
    before = page.body.tasks.at(-1).task_id;
  }
}

function latencyLine(xs: Outcome[]): string {
  const ok = xs.filter((o) => o.code === "ok").map((o) => o.ms);
  return `p50 ${fx(pct(ok, 50))} / p99 ${fx(pct(ok, 99))} ms over ${ok.length} ok`;
}

/** The slowest answered tasks, replica by replica: where a fault made them wait. */
async function slowest(stack: Stack, outcomes: Outcome[]): Promise<void> {
  const slow = outcomes
    .filter((o) => o.code === "ok" && o.taskId)
    .sort((a, b) => b.ms - a.ms)
    .slice(0, 4);
  for (const o of slow) {
    const v = (await api(stack.router, `/api/v1/tasks/default/${o.taskId}`)).body;
    const at = (x: number | null) => (x === null ? "-" : `+${x - v.created_at}`);
    const replicas = (v.replicas ?? []).map(
      (r: {
        miner: string;
        state: string;
        assigned_at: number;
        acked_at: number | null;
        committed_at: number | null;
        reason: string | null;
      }) =>
        `${r.miner.slice(0, 8)} ${r.state} assigned ${at(r.assigned_at)} acked ${at(r.acked_at)} committed ${at(r.committed_at)}${r.reason ? ` (${r.reason})` : ""}`,
    );
    const created = ((v.created_at - t00) / 1000).toFixed(1);
    console.log(
      `  slow task ${o.taskId} (created @${created}): ${fx(o.ms, 0)} ms at the client; replicas (ms after creation): ${replicas.join("; ")}`,
    );
  }
}

async function audit(stack: Stack, outcomes: Outcome[]): Promise<void> {
  // Let what the chaos left running finish (reassignments, deadlines) before judging it.
  const deadline = Date.now() + 120_000;
  let tasks = await allTasks(stack);
  while (tasks.some((t) => !TERMINAL.has(t.status)) && Date.now() < deadline) {
    await sleep(2000);
    tasks = await allTasks(stack);
  }
  const byStatus = new Map<string, number>();
  for (const t of tasks) byStatus.set(t.status, (byStatus.get(t.status) ?? 0) + 1);
  const okIds = outcomes.filter((o) => o.code === "ok").map((o) => o.taskId);
  const dupAnswers = okIds.length - new Set(okIds).size;
  const overCommitted = tasks.filter((t) => t.replicas.filter((r) => r.state === "committed").length > t.redundancy).length;
  const codes = new Map<string, number>();
  for (const o of outcomes) codes.set(`${o.phase}:${o.code}`, (codes.get(`${o.phase}:${o.code}`) ?? 0) + 1);
  const known = new Set(tasks.map((t) => t.task_id));
  const answeredUnknown = okIds.filter((id) => !id || !known.has(id)).length;
  console.log(`\naudit of the default session after the drain   [${loadLine()}]`);
  console.log(`  tasks in the session: ${tasks.length}; by status: ${[...byStatus].map(([s, n]) => `${s} ${n}`).join(", ")}`);
  console.log(`  lost (accepted, never closed or failed): ${tasks.filter((t) => !TERMINAL.has(t.status)).length}`);
  console.log(`  duplicated results: ${dupAnswers} task ids answered twice; ${overCommitted} tasks with more committed replicas than k`);
  console.log(`  answered ok but unknown to the session: ${answeredUnknown}`);
  console.log(`  client outcomes: ${[...codes].map(([c, n]) => `${c} ${n}`).join(", ")}`);
  console.log(`  answers without an explicit status (no JSON error code): ${outcomes.filter((o) => o.code === "none").length}`);
  console.log(`  requests cut by a router restart before any answer: ${outcomes.filter((o) => o.code === "cut").length}`);
  for (const [phase, first] of Object.entries(firstSilent)) console.log(`    first of them (${phase}): ${first}`);
  await slowest(stack, outcomes);
  console.log(`  latency without chaos: ${latencyLine(outcomes.filter((o) => o.phase === "baseline"))}`);
  console.log(`  latency during chaos:  ${latencyLine(outcomes.filter((o) => o.phase === "chaos"))}`);
}

console.log(`bench:soak on ${process.platform} ${process.arch}, node ${process.version}, ${loadLine()}`);
const stack = await startStack({ persist: "disk", miners: MINERS, concurrency: CONCURRENCY });
try {
  const target: Target = {
    name: "ours",
    url: `${stack.router.url}/api/v1/completions`,
    headers: { authorization: "Bearer dev-key" },
    body: (i) => ({ prompt: `soak ${i}`, max_tokens: 1 }),
  };
  const outcomes: Outcome[] = [];
  const t0 = performance.now();
  await load(target, "baseline", BASELINE, outcomes);
  console.log(`baseline: ${BASELINE} requests, ${CLIENTS} clients, in ${fx((performance.now() - t0) / 1000, 1)} s   [${loadLine()}]`);
  let running = true;
  const faults: string[] = [];
  const t1 = performance.now();
  const monkey = chaos(stack, () => running, faults);
  await load(target, "chaos", TASKS, outcomes);
  running = false;
  await monkey;
  console.log(`faults: ${faults.join("; ")}`);
  const count = (prefix: string) => faults.filter((f) => f.startsWith(prefix)).length;
  console.log(
    `chaos: ${TASKS} requests in ${fx((performance.now() - t1) / 1000, 1)} s; ${count("kill")} miner SIGKILLs, ${count("restart")} router restarts (every SessionQueue evicted)   [${loadLine()}]`,
  );
  await audit(stack, outcomes);
} finally {
  await stack.stop();
}
process.exit(0);
