// `npm run bench:ablation`: what each step of a completion costs the router, by leaving it out. A temporary git
// worktree of HEAD gets bench/ablation.patch, which reads BENCH_ABLATE (a comma list) and skips the steps it names:
//   rl     the rate-limit middleware             log    the request-log line
//   meter  usage metering and budget settling    sign   the receipt's signature (an empty one is sent)
//   store  storing the receipt                   sig    the miner's precommit signature check
// Those switches exist only in that worktree, never in the router the project ships. Each setting gets its own
// router under Miniflare (state on disk) with one zero-cost miner (bench/lib/stack.ts); sequential requests go to
// every router in turn, then closed-loop rounds alternate, so all settings share the machine's moods. Prints figures
// beside the load; asserts nothing. Options: --settings="none;rl;…" --n=300 --clients=32 --seconds=6 --rounds=2.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../test/helpers/network.ts";
import { call, closedLoop, fx, pct, type Target } from "./lib/load.ts";
import { cpuMs, loadLine } from "./lib/proc.ts";
import type * as StackModule from "./lib/stack.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const SETTINGS = (args.get("settings") ?? "none;rl;log;meter;sign;store;sig;rl,log,meter,sign,store,sig").split(";");
const N = Number(args.get("n") ?? 300);
const SECONDS = Number(args.get("seconds") ?? 6);
const CLIENTS = Number(args.get("clients") ?? 32);
const ROUNDS = Number(args.get("rounds") ?? 2);

const parent = mkdtempSync(join(tmpdir(), "bench-ablation-"));
const tree = join(parent, "tree");
const git = (...a: string[]) => execFileSync("git", a, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] }).toString();
git("worktree", "add", "--detach", tree, "HEAD");
try {
  execFileSync("git", ["apply", join(ROOT, "bench/ablation.patch")], { cwd: tree, stdio: "inherit" });
  symlinkSync(join(ROOT, "node_modules"), join(tree, "node_modules"));
  symlinkSync(join(ROOT, "miner-agent/node_modules"), join(tree, "miner-agent/node_modules"));
  const { startStack }: typeof StackModule = await import(join(tree, "bench/lib/stack.ts"));
  console.log(
    `bench:ablation of ${git("rev-parse", "--short", "HEAD").trim()} on ${process.platform}, node ${process.version}, ${loadLine()}`,
  );

  const runs = [];
  for (const setting of SETTINGS) {
    const stack = await startStack({
      persist: "disk",
      miners: 1,
      concurrency: 64,
      vars: { BENCH_ABLATE: setting === "none" ? "" : setting },
    });
    const target: Target = {
      name: setting,
      url: `${stack.router.url}/api/v1/completions`,
      headers: { authorization: "Bearer dev-key" },
      body: (i: number) => ({ prompt: `bench ${i % 7}`, max_tokens: 1 }),
    };
    runs.push({ setting, stack, target, sequential: [] as number[], cpu: [] as number[], perSecond: [] as number[] });
  }
  try {
    for (const r of runs) for (let i = 0; i < 30; i++) await call(r.target, i);
    for (let i = 0; i < N; i++) {
      for (const r of runs) {
        const a = await call(r.target, i);
        if (a.status !== 200) throw new Error(`${r.setting}: ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
        r.sequential.push(a.ms);
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const r of round % 2 ? [...runs].reverse() : runs) {
        const pid = r.stack.router.workerdPid();
        const before = cpuMs(pid);
        const res = await closedLoop(r.target, CLIENTS, SECONDS);
        r.cpu.push((cpuMs(pid) - before) / res.ok);
        r.perSecond.push(res.perSecond);
      }
    }
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const base = runs[0];
    console.log(
      `\n${N} sequential requests per setting, interleaved; ${ROUNDS} rounds of ${CLIENTS} clients × ${SECONDS} s  [${loadLine()}]`,
    );
    console.log(
      `  ${"left out".padEnd(32)} ${"p50 ms".padStart(8)} ${"Δ p50".padStart(7)} ${"p99 ms".padStart(8)} ${"CPU ms/task".padStart(12)} ${"tasks/s".padStart(8)}`,
    );
    for (const r of runs) {
      const p50 = pct(r.sequential, 50);
      const delta = fx(p50 - pct(base.sequential, 50));
      console.log(
        `  ${r.setting.padEnd(32)} ${fx(p50).padStart(8)} ${delta.padStart(7)} ${fx(pct(r.sequential, 99)).padStart(8)} ${fx(avg(r.cpu)).padStart(12)} ${fx(avg(r.perSecond), 1).padStart(8)}`,
      );
    }
  } finally {
    for (const r of runs) await r.stack.stop();
  }
} finally {
  git("worktree", "remove", "--force", tree);
  rmSync(parent, { recursive: true, force: true });
}
process.exit(0);
