// `npm run bench:cheats`: the cheat suite over many tasks at redundancy 3, on the real network (wrangler dev +
// miner-agent processes, some started with the test-only `--test-dishonest <mode>`). Unlike the integration
// test, nobody is slowed down: honest and dishonest miners race as they would for real. Prints false
// accusations of honest miners and the detection rate of each cheat; asserts nothing.
//
//   --honest=N        tasks in a session of three honest miners (default 200; the issue's aim is 0 in 1,000)
//   --per-cheat=N     tasks per cheat, each in a session of two honest miners and the cheater (default 50)
//   --max-tokens=N    tokens per task (default 8)
//   --in-flight=N     tasks submitted at once (default 2)
//   --settle-ms=N     after the last task, how long stragglers get to reach their final state (default 8000: a
//                     silent replica is timed out at its own precommit deadline, the 5 s ack window + prefill +
//                     tokens at its declared speed)
//   --precommit-timeout=S  the client's precommit_timeout (default: none). A client deadline cuts a replica
//                     short without blame (fair deadlines), so setting one hides silent cheaters rather than
//                     catching them; below the task's floor it is refused (400 deadline_too_short)
//   --reputation-floor=F  the router's REPUTATION_FLOOR (default: wrangler.toml's 0.2); 0 benches nobody, so
//                     every cheating replica is judged
//   --only=mode,...   run only these cheats (and honest tasks if "honest" is listed)
//   --consensus=similarity  sessions judge by embeddings: each replica samples with its own seed
//                     (temperature 0.8 and max_tokens 48 unless given) and a validator miner embeds the outputs;
//                     prints the cosine distances seen, to calibrate the dispersion threshold
//   --temperature=T   sampling temperature (default 0, greedy; 0.8 with --consensus=similarity)
//   --seed=N          the client pins task i's seed to N + i: honest replicas sample the same text, so (similarity)
//                     validators judge cheaters against identical honest outputs rather than independent samples
//   --consensus=verify  verified sampling at k = 1 (48 tokens at temperature 0.8 unless given): validators outside
//                     the task re-score the one replica's output; prints the margins (bench/cheats-verify.ts).
//                     Cheats: junk, wrong-model, perturbed-weights, copy, usage-inflate (run one at a time with
//                     --only and --in-flight=3 so the cheater gets a third of the tasks)
//   --verify-fraction=F  spot-check that share of positions instead of every one (verify)
//   --cost=N          (verify) then N tasks each of verified k = 1, unverified k = 1 and exact k = 3: latency, miner CPU
//                     (with --verify-fraction also spot-checked k = 1, and the validators' time per check)
//   --cheaters=N      cheating miners per mode (default 1), all in the mode's session with two honest miners: at
//                     k = 1 a task goes to whichever miner is free, so N cheaters get about N / (N + 2) of the tasks
//                     (copy holds each task until its deadline: give it --in-flight well above N)
//   --target-cheats=N stop submitting once each mode's cheaters report N finished tasks (their own task_done or
//                     copy events; the figures still come from the task views); --per-cheat then only caps the run
import { API_KEY, api, type Miner, type Router, startMiner, startRouter, until } from "../test/helpers/network.ts";
import { type Margins, newMargins, noteVerification, printMargins, runCost, type VerificationView } from "./cheats-verify.ts";

const MODES = [
  "junk",
  "wrong-model",
  "bad-commit",
  "replay-signature",
  "silent-after-ack",
  "copy",
  "usage-inflate",
  "oversize",
  "lying-validator",
  "perturbed-weights",
  "quantized",
] as const;
type Mode = (typeof MODES)[number];

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const HONEST = Number(args.get("honest") ?? 200);
const PER_CHEAT = Number(args.get("per-cheat") ?? 50);
const CONSENSUS = args.get("consensus") ?? "auto";
const SIMILARITY = CONSENSUS === "similarity";
const VERIFY = CONSENSUS === "verify";
const MAX_TOKENS = Number(args.get("max-tokens") ?? (SIMILARITY || VERIFY ? 48 : 8));
const TEMPERATURE = Number(args.get("temperature") ?? (SIMILARITY || VERIFY ? 0.8 : 0));
/** Verified sampling runs one replica per task; the others, three. */
const K = VERIFY ? 1 : 3;
const VERIFY_FRACTION = args.has("verify-fraction") ? Number(args.get("verify-fraction")) : undefined;
const COST = Number(args.get("cost") ?? 0);
const IN_FLIGHT = Number(args.get("in-flight") ?? 2);
const SETTLE_MS = Number(args.get("settle-ms") ?? 8000);
const PRECOMMIT_TIMEOUT = args.has("precommit-timeout") ? Number(args.get("precommit-timeout")) : undefined;
const SEED = args.has("seed") ? Number(args.get("seed")) : undefined;
const CHEATERS = Number(args.get("cheaters") ?? 1);
const TARGET = args.has("target-cheats") ? Number(args.get("target-cheats")) : undefined;
const only = args.get("only")?.split(",");
/** REPUTATION_FLOOR for the router: 0 keeps every cheater in play, so each of its replicas is judged. */
const FLOOR = args.get("reputation-floor");
const modes = MODES.filter((m) => !only || only.includes(m));
const runHonest = !only || only.includes("honest");

const LIVE = new Set(["assigned", "acked", "precommitted"]);
const WORDS = ["river", "stone", "light", "market", "engine", "garden", "signal", "harbor", "winter", "paper", "orbit", "forest"];

interface Replica {
  miner: string;
  state: string;
  agreed: boolean | null;
  reason: string | null;
}
interface Job {
  group: "honest" | Mode;
  sid: string;
  prompt: string;
  task_id?: string;
  status?: number;
  error?: string;
}

const addr = (m: Miner) => m.address()!.toLowerCase();
const pct = (a: number, b: number) => (b === 0 ? "n/a" : `${((100 * a) / b).toFixed(1)}%`);

async function session(router: Router, miners: Miner[]): Promise<string> {
  const res = await api(router, "/api/v1/sessions", {
    body: {
      deposit: 1e8,
      redundancy: K,
      max_miners: Math.max(3, miners.length),
      mode: "dedicated",
      dedicated_miners: miners.map(addr),
      consensus: CONSENSUS,
    },
  });
  if (res.status !== 201) throw new Error(`session: ${JSON.stringify(res.body)}`);
  await until(
    async () => (await api(router, `/api/v1/sessions/${res.body.id}`)).body.usage?.connected_miners?.length >= miners.length,
    60_000,
  );
  return res.body.id as string;
}

function prompt(i: number): string {
  // Varied prompts so honest outputs differ between tasks (a cheat cannot pass by guessing one answer).
  const w = (k: number) => WORDS[(i * 7 + k * 5) % WORDS.length];
  return `${w(0)} ${w(1)} ${i} ${w(2)}`;
}

// Per group: tasks, completions, honest replicas wrongly accused, cheater replicas caught / missed by how.
interface Tally {
  tasks: number;
  failed: number;
  honestWin: number;
  honestReplicas: number;
  falseAccusations: number;
  honestStragglers: number;
  cheaterAssigned: number;
  caught: number;
  missed: Record<string, number>;
  replicas: Record<number, number>;
}
interface Report {
  tally: Map<string, Tally>;
  accusations: string[];
  // Similarity consensus: each replica's cosine distance to the chosen output, by who produced it.
  distances: Record<string, number[]>;
  methods: Record<string, number>;
  /** Verified sampling: the verdicts' margins and evidence. */
  margins: Margins;
  failures: Record<string, number>;
  failedViews: string[];
}
// The fields of GET /api/v1/tasks/:sid/:task_id that the judge reads.
interface TaskView {
  status: string;
  error?: { message?: string };
  replicas: Replica[];
  result?: { miner: string };
  consensus?: {
    method: string;
    status: string;
    agreed: string[];
    outliers?: string[];
    similarity?: { distances?: Record<string, number> };
    note?: string;
    verification?: VerificationView;
  };
}
interface Network {
  honest: Miner[];
  cheaters: Map<Mode, Miner[]>;
  honestSet: Set<string>;
  cheaterOf: Map<string, Mode>;
}

// Starts three honest miners and one cheater per mode; every miner goes into `miners` (for the caller to stop).
async function startMiners(router: Router, miners: Miner[]): Promise<Network> {
  const honest = await Promise.all(["h1", "h2", "h3"].map((name) => startMiner(router.url, { name })));
  const cheaters = new Map<Mode, Miner[]>();
  for (const mode of modes) {
    // copy reads with the session owner's API key: the worst case.
    const env = mode === "copy" ? { env: { MINER_TEST_COPY_API_KEY: API_KEY } } : {};
    // A cheater that holds its tasks (silent-after-ack, copy) would be busy, and so skipped, at most assignments:
    // it gets a slot for every task in flight so each of its tasks judges it.
    const start = (i: number) =>
      startMiner(router.url, { name: `cheat-${mode}-${i}`, concurrency: IN_FLIGHT, args: ["--test-dishonest", mode], ...env });
    cheaters.set(mode, await Promise.all(Array.from({ length: CHEATERS }, (_, i) => start(i))));
  }
  miners.push(...honest, ...[...cheaters.values()].flat());
  await Promise.all(miners.map((m) => m.waitFor("ready", undefined, 180_000)));
  const honestSet = new Set(honest.map(addr));
  const cheaterOf = new Map([...cheaters].flatMap(([mode, ms]) => ms.map((m) => [addr(m), mode] as const)));
  return { honest, cheaters, honestSet, cheaterOf };
}

// One session per group (all-honest, then one per cheat) and its tasks, shuffled.
async function buildJobs(router: Router, { honest, cheaters }: Network): Promise<Job[]> {
  const jobs: Job[] = [];
  if (runHonest) {
    const sid = await session(router, honest);
    for (let i = 0; i < HONEST; i++) jobs.push({ group: "honest", sid, prompt: prompt(i) });
  }
  for (const [mode, ms] of cheaters) {
    const sid = await session(router, [honest[0]!, honest[1]!, ...ms]);
    for (let i = 0; i < PER_CHEAT; i++) jobs.push({ group: mode, sid, prompt: prompt(10_000 + i) });
  }
  shuffle(jobs);
  return jobs;
}

// Interleave the groups so every session sees the same conditions over the run.
function shuffle(jobs: Job[]): void {
  let seed = 42;
  for (let i = jobs.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const j = seed % (i + 1);
    [jobs[i], jobs[j]] = [jobs[j]!, jobs[i]!];
  }
}

/** Finished tasks a mode's cheaters report themselves (task_done; copy: its dishonest events). */
function cheats(ms: Miner[]): number {
  const counted = (e: { event: string; dishonest?: unknown; mode?: unknown }) =>
    (e.event === "task_done" && !!e.dishonest) || (e.event === "dishonest" && e.mode === "copy");
  return ms.reduce((n, m) => n + m.events.filter(counted).length, 0);
}

/** --target-cheats: a job is skipped once its mode's cheaters have reported enough (honest jobs run while any mode runs). */
function skip(job: Job, net: Network): boolean {
  if (TARGET === undefined) return false;
  const enough = (mode: Mode) => cheats(net.cheaters.get(mode) ?? []) >= TARGET;
  return job.group === "honest" ? modes.every(enough) : enough(job.group);
}

// Submits the jobs IN_FLIGHT at a time, recording each one's status, task id and error; then lets stragglers settle.
async function runJobs(router: Router, jobs: Job[], net: Network): Promise<void> {
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < jobs.length) {
        const index = next++;
        const job = jobs[index]!;
        if (skip(job, net)) continue;
        const res = await api(router, `/api/v1/completions/${job.sid}`, {
          body: {
            prompt: job.prompt,
            max_tokens: MAX_TOKENS,
            temperature: TEMPERATURE,
            ...(VERIFY_FRACTION === undefined ? {} : { verify: { fraction: VERIFY_FRACTION } }),
            ...(PRECOMMIT_TIMEOUT === undefined ? {} : { precommit_timeout: PRECOMMIT_TIMEOUT }),
            ...(SEED === undefined ? {} : { seed: SEED + index }),
          },
        });
        job.status = res.status;
        job.task_id = res.body.task_id ?? res.body.error?.details?.task_id;
        if (res.status !== 200) job.error = res.body.error?.code ?? String(res.status);
        if (++done % 100 === 0) console.log(`  ${done}/${jobs.length} tasks (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const ran = jobs.filter((j) => j.status !== undefined).length;
  console.log(`ran ${ran} of ${jobs.length} tasks in ${elapsed.toFixed(1)} s; letting stragglers settle for ${SETTLE_MS} ms`);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
}

// Reads each job's task view, one after another, into the per-group tallies.
async function judge(router: Router, jobs: Job[], net: Network): Promise<Report> {
  const report: Report = {
    tally: new Map(),
    accusations: [],
    distances: {},
    methods: {},
    margins: newMargins(),
    failures: {},
    failedViews: [],
  };
  for (const job of jobs) if (job.status !== undefined) await judgeJob(router, job, net, report);
  return report;
}

function newTally(): Tally {
  return {
    tasks: 0,
    failed: 0,
    honestWin: 0,
    honestReplicas: 0,
    falseAccusations: 0,
    honestStragglers: 0,
    cheaterAssigned: 0,
    caught: 0,
    missed: {},
    replicas: {},
  };
}

async function judgeJob(router: Router, job: Job, net: Network, report: Report): Promise<void> {
  const { tally, failures, failedViews } = report;
  const t = tally.get(job.group) ?? newTally();
  tally.set(job.group, t);
  t.tasks++;
  if (job.status !== 200) {
    t.failed++;
    failures[job.error!] = (failures[job.error!] ?? 0) + 1;
  }
  if (!job.task_id) return;
  const view = (await api<TaskView>(router, `/api/v1/tasks/${job.sid}/${job.task_id}`)).body;
  if (job.status !== 200 && failedViews.length < 5) {
    failedViews.push(
      `${job.group} task ${job.sid}/${job.task_id}: ${view.status} ${view.error?.message ?? ""}; ` +
        view.replicas.map((r: Replica) => `${r.miner.slice(0, 8)} ${r.state}${r.reason ? ` (${r.reason})` : ""}`).join(", "),
    );
  }
  noteConsensus(view, net, report);
  if (VERIFY) noteVerification(report.margins, view.consensus);
  judgeReplicas(job, view, t, net, report);
}

// The consensus verdict, and (similarity) each non-chosen replica's distance, by who produced it.
function noteConsensus(view: TaskView, { honestSet, cheaterOf }: Network, { methods, distances }: Report): void {
  if (view.consensus)
    methods[`${view.consensus.method}/${view.consensus.status}`] = (methods[`${view.consensus.method}/${view.consensus.status}`] ?? 0) + 1;
  for (const [who, d] of Object.entries<number>(view.consensus?.similarity?.distances ?? {})) {
    if (who === view.result?.miner) continue; // the chosen output itself (distance 0)
    const kind = honestSet.has(who) ? "honest" : (cheaterOf.get(who) ?? "other");
    (distances[kind] ??= []).push(d);
  }
}

// Honest output won?; each honest replica accused or left live; each cheater replica caught or missed (and how).
function judgeReplicas(job: Job, view: TaskView, t: Tally, { honestSet, cheaterOf }: Network, { accusations }: Report): void {
  const replicas: Replica[] = view.replicas;
  const outliers = new Set<string>((view.consensus?.outliers ?? []).map((a: string) => a.toLowerCase()));
  t.replicas[replicas.length] = (t.replicas[replicas.length] ?? 0) + 1;
  if (
    view.status === "closed" &&
    view.consensus?.status === "agreed" &&
    view.consensus.agreed.every((a: string) => honestSet.has(a.toLowerCase()))
  ) {
    t.honestWin++;
  }
  const accused = (r: Replica) =>
    r.state === "rejected" || r.state === "timed_out" || r.agreed === false || outliers.has(r.miner.toLowerCase());
  for (const r of replicas) {
    const who = r.miner.toLowerCase();
    if (honestSet.has(who)) {
      t.honestReplicas++;
      if (accused(r)) {
        t.falseAccusations++;
        accusations.push(`${job.group} task ${job.sid}/${job.task_id}: honest ${who} ${r.state} agreed=${r.agreed} ${r.reason ?? ""}`);
      }
      if (LIVE.has(r.state)) t.honestStragglers++;
    } else if (cheaterOf.has(who)) {
      t.cheaterAssigned++;
      if (accused(r)) t.caught++;
      else {
        // Verified sampling: a cheater's output that passed a real check differs from one closed unverified (a note).
        const verdict = VERIFY
          ? `, ${view.consensus?.note ? `unverified: ${view.consensus.note}` : (view.consensus?.method ?? "no verdict")}`
          : "";
        const how = LIVE.has(r.state) ? `left ${r.state} (after the quorum closed the task)` : `${r.state}, agreed=${r.agreed}${verdict}`;
        t.missed[how] = (t.missed[how] ?? 0) + 1;
      }
    }
  }
}

function printReport(report: Report): void {
  printHonest(report);
  console.log(`  consensus verdicts: ${JSON.stringify(report.methods)}`);
  printDistances(report.distances);
  if (VERIFY) printMargins(report.margins);
  printDetection(report.tally);
}

function printHonest({ tally, accusations, failures, failedViews }: Report): void {
  console.log("\nhonest miners");
  let fa = 0;
  let hr = 0;
  for (const [group, t] of tally) {
    fa += t.falseAccusations;
    hr += t.honestReplicas;
    console.log(
      `  ${group.padEnd(18)} ${String(t.tasks).padStart(5)} tasks, ${t.failed} failed, honest output ${pct(t.honestWin, t.tasks)}; ` +
        `honest replicas ${t.honestReplicas}, falsely accused ${t.falseAccusations}, never reached a final state ${t.honestStragglers}; ` +
        `replicas per task ${JSON.stringify(t.replicas)}`,
    );
  }
  console.log(
    `  FALSE ACCUSATIONS: ${fa} of ${hr} honest replicas (${tally.get("honest")?.falseAccusations ?? 0} in ${tally.get("honest")?.tasks ?? 0} all-honest tasks)`,
  );
  for (const a of accusations.slice(0, 10)) console.log(`    ${a}`);
  if (Object.keys(failures).length) console.log(`  failed tasks by error code: ${JSON.stringify(failures)}`);
  for (const v of failedViews) console.log(`    ${v}`);
}

function printDistances(distances: Record<string, number[]>): void {
  if (!Object.keys(distances).length) return;
  const q = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))]!.toFixed(3);
  console.log("\ncosine distance to the chosen output (similarity consensus)");
  for (const [kind, d] of Object.entries(distances)) {
    console.log(
      `  ${kind.padEnd(18)} n=${String(d.length).padStart(4)}  min ${q(d, 0)}  p05 ${q(d, 0.05)}  p50 ${q(d, 0.5)}  p95 ${q(d, 0.95)}  max ${q(d, 1)}`,
    );
  }
}

function printDetection(tally: Map<string, Tally>): void {
  console.log(
    `\ndetection at k = ${K} (sessions of 2 honest miners + ${CHEATERS} cheater${CHEATERS > 1 ? "s" : ""}${VERIFY ? ", one replica per task" : ""})`,
  );
  for (const mode of modes) {
    const t = tally.get(mode)!;
    const missed = Object.entries(t.missed)
      .map(([how, n]) => `${n} ${how}`)
      .join("; ");
    // A cheater the pool has benched (reputation) is no longer assigned: those tasks ran on two honest miners.
    console.log(
      `  ${mode.padEnd(18)} caught ${t.caught} of ${t.cheaterAssigned} cheating replicas = ${pct(t.caught, t.cheaterAssigned)}` +
        `; not assigned (busy or benched) in ${t.tasks - t.cheaterAssigned} of ${t.tasks} tasks` +
        `${missed ? `; missed: ${missed}` : ""}; honest output ${pct(t.honestWin, t.tasks)}`,
    );
  }
}

// copy: what its own log says it found before it had to precommit, and how many copies were judged agreeing.
function printCopies(copiers: Miner[], t: Tally): void {
  const tries = copiers.flatMap((c) => c.events.filter((e) => e.event === "dishonest" && e.mode === "copy"));
  const found = tries.filter((e) => e.copied === true).length;
  const agreed = Object.entries(t.missed)
    .filter(([how]) => how.startsWith("committed, agreed=true"))
    .reduce((n, [, k]) => n + k, 0);
  console.log(
    `  copy: ${tries.length} attempts, ${found} found another replica's text to copy; SUCCESSFUL COPIES (judged agreeing): ${agreed}`,
  );
}

async function main(): Promise<void> {
  console.log(
    `cheat bench: k = ${K}, ${runHonest ? HONEST : 0} honest tasks, ${PER_CHEAT} per cheat (${modes.join(", ")}), ` +
      `max_tokens ${MAX_TOKENS}, temperature ${TEMPERATURE}, consensus ${CONSENSUS}, ${CHEATERS} cheater(s) per mode` +
      `${TARGET === undefined ? "" : `, until ${TARGET} cheating tasks per mode`}`,
  );
  const router = await startRouter(FLOOR === undefined ? {} : { vars: { REPUTATION_FLOOR: FLOOR } });
  const miners: Miner[] = [];
  try {
    const net = await startMiners(router, miners);
    const jobs = await buildJobs(router, net);
    await runJobs(router, jobs, net);
    const report = await judge(router, jobs, net);
    printReport(report);
    if (net.cheaters.has("copy")) printCopies(net.cheaters.get("copy")!, report.tally.get("copy")!);
    if (VERIFY && COST > 0) await runCost(router, net.honest, COST, MAX_TOKENS, TEMPERATURE, VERIFY_FRACTION);
  } finally {
    await Promise.all(miners.map((m) => m.stop("SIGKILL")));
    await router.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
