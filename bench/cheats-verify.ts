import { readFileSync } from "node:fs";
import { api, type Miner, type Router, until } from "../test/helpers/network.ts";

// The verified-sampling parts of `npm run bench:cheats -- --consensus=verify` (bench/cheats.ts): the margin
// statistics of the verdicts, and the cost comparison (`--cost=N`): end-to-end latency and total miner CPU of a
// verified k = 1 task, an unverified k = 1 task and a k = 3 exact-consensus task (one shared seed, so the three
// replicas agree) — and with --verify-fraction a spot-checked k = 1 task — N of each, interleaved, one at a time,
// on the same three honest miners in the same run; plus the validators' own time per check (their
// verification_done events: the forward pass over the positions re-scored, and the replay).

/** What the bench reads of a verdict's `verification`. */
export interface VerificationView {
  checked: number;
  tokens: number;
  near_ties: number;
  min_margin: number | null;
  failed: Record<string, { positions: number[]; count: number; reason: string }>;
}

export interface Margins {
  tasks: number;
  checked: number;
  nearTies: number;
  minMargins: number[];
  /** Failing replicas that carried positions (not only -1). */
  withPositions: number;
  failedReplicas: number;
  unverifiedNotes: Record<string, number>;
}

export const newMargins = (): Margins => ({
  tasks: 0,
  checked: 0,
  nearTies: 0,
  minMargins: [],
  withPositions: 0,
  failedReplicas: 0,
  unverifiedNotes: {},
});

/** Adds one task's verdict to the margin statistics. */
export function noteVerification(m: Margins, c: { method: string; note?: string; verification?: VerificationView } | undefined): void {
  if (!c) return;
  if (c.method !== "verify") {
    if (c.note) m.unverifiedNotes[c.note] = (m.unverifiedNotes[c.note] ?? 0) + 1;
    return;
  }
  const v = c.verification!;
  m.tasks++;
  m.checked += v.checked;
  m.nearTies += v.near_ties;
  if (v.min_margin !== null) m.minMargins.push(v.min_margin);
  for (const f of Object.values(v.failed)) {
    m.failedReplicas++;
    if (f.positions.some((p) => p >= 0)) m.withPositions++;
  }
}

const q = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))] ?? Number.NaN;

export function printMargins(m: Margins): void {
  console.log("\nverified sampling: margins of the recomputed decisions (honest and cheating tasks alike)");
  console.log(
    `  ${m.tasks} verified tasks, ${m.checked} positions checked; near ties accepted ${m.nearTies}; ` +
      `per-task smallest margin (probability units; greedy: logit gap): min ${q(m.minMargins, 0).toExponential(2)}, ` +
      `p05 ${q(m.minMargins, 0.05).toExponential(2)}, p50 ${q(m.minMargins, 0.5).toExponential(2)}`,
  );
  console.log(`  failing replicas ${m.failedReplicas}, ${m.withPositions} of them with token positions as evidence`);
  if (Object.keys(m.unverifiedNotes).length) console.log(`  closed unverified: ${JSON.stringify(m.unverifiedNotes)}`);
}

/** utime + stime of a process, in seconds (Linux /proc; the miner agent runs in one process). */
function cpuSeconds(m: Miner): number {
  const stat = readFileSync(`/proc/${m.process.pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function costSession(router: Router, miners: Miner[], redundancy: number, consensus: string): Promise<string> {
  const addr = (m: Miner) => m.address()!.toLowerCase();
  const res = await api(router, "/api/v1/sessions", {
    body: { deposit: 1e8, redundancy, max_miners: 3, mode: "dedicated", dedicated_miners: miners.map(addr), consensus },
  });
  if (res.status !== 201) throw new Error(`session: ${JSON.stringify(res.body)}`);
  await until(async () => (await api(router, `/api/v1/sessions/${res.body.id}`)).body.usage?.connected_miners?.length >= 3, 60_000);
  return res.body.id as string;
}

interface CostKind {
  name: string;
  sid: string;
  extra?: Record<string, unknown>;
}

/** The validators' verification_done events so far, across the honest miners. */
const checks = (honest: Miner[]) => honest.flatMap((m) => m.events.filter((e) => e.event === "verification_done"));

/**
 * `--cost=N`: latency and miner CPU per task of verified k = 1, unverified k = 1 and exact k = 3 (and, given a
 * spot-check fraction, spot-checked k = 1), with the validators' time and positions re-scored per check.
 */
export async function runCost(router: Router, honest: Miner[], n: number, maxTokens: number, temperature: number, fraction?: number) {
  const verifySid = await costSession(router, honest, 1, "verify");
  const kinds: CostKind[] = [
    { name: "verified k = 1", sid: verifySid },
    ...(fraction ? [{ name: `spot-checked k = 1 (${fraction})`, sid: verifySid, extra: { verify: { fraction } } }] : []),
    { name: "unverified k = 1", sid: await costSession(router, honest, 1, "auto") },
    { name: "exact k = 3 (shared seed)", sid: await costSession(router, honest, 3, "exact") },
  ];
  const stats = kinds.map(() => ({
    ms: [] as number[],
    cpu: 0,
    failed: 0,
    methods: {} as Record<string, number>,
    checkMs: [] as number[],
    rescored: 0,
  }));
  const cpu = () => honest.reduce((s, m) => s + cpuSeconds(m), 0);
  for (let i = 0; i < n; i++) {
    for (const [k, kind] of kinds.entries()) {
      const c0 = cpu();
      const seen = checks(honest).length;
      const t0 = performance.now();
      const res = await api(router, `/api/v1/completions/${kind.sid}`, {
        body: { prompt: `cost ${i} the river and the stone`, max_tokens: maxTokens, temperature, ...kind.extra },
      });
      stats[k]!.ms.push(performance.now() - t0);
      // A verification answer may land just after the client's answer: the validator's CPU is counted by waiting.
      await new Promise((r) => setTimeout(r, 20));
      stats[k]!.cpu += cpu() - c0;
      for (const e of checks(honest).slice(seen)) {
        stats[k]!.checkMs.push(Number(e.ms));
        stats[k]!.rescored += Number(e.rescored);
      }
      if (res.status !== 200) stats[k]!.failed++;
      const method = String(res.body.consensus?.method);
      stats[k]!.methods[method] = (stats[k]!.methods[method] ?? 0) + 1;
    }
  }
  console.log(`\ncost: ${n} tasks of each kind, interleaved, one at a time, ${maxTokens} tokens at temperature ${temperature}`);
  const base = stats[kinds.findIndex((k) => k.name === "unverified k = 1")]!;
  for (const [k, kind] of kinds.entries()) {
    const s = stats[k]!;
    const p50 = q(s.ms, 0.5);
    const check = s.checkMs.length
      ? `; validator ${q(s.checkMs, 0.5).toFixed(1)} ms p50 per check, ${(s.rescored / s.checkMs.length).toFixed(1)} positions re-scored`
      : "";
    console.log(
      `  ${kind.name.padEnd(30)} latency p50 ${p50.toFixed(1)} ms, p95 ${q(s.ms, 0.95).toFixed(1)} ms ` +
        `(${(p50 / q(base.ms, 0.5)).toFixed(2)}× unverified); miner CPU ${((1000 * s.cpu) / n).toFixed(1)} ms/task ` +
        `(${(s.cpu / base.cpu).toFixed(2)}×)${check}; failed ${s.failed}; verdicts ${JSON.stringify(s.methods)}`,
    );
  }
}
