// `node bench/router-ab.ts --base=<another checkout>`: an A/B of two routers in the same minutes. A is the router,
// miner-agent and bench stack of another checkout (e.g. `git worktree add /tmp/wt-base HEAD --detach`, with
// node_modules and miner-agent/node_modules linked in), B is this tree's. Each runs under Miniflare with state on
// disk and its own zero-cost miners (bench/lib/stack.ts). Sequential requests alternate A, B, B, A, …; closed-loop
// rounds alternate the same way, so both see the same machine. Prints figures beside the load; asserts nothing.
import { resolve } from "node:path";
import { call, closedLoop, fx, pct, type Target } from "./lib/load.ts";
import { cpuMs, loadLine } from "./lib/proc.ts";
import type * as StackModule from "./lib/stack.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const BASE = args.get("base");
if (!BASE) throw new Error("usage: node bench/router-ab.ts --base=<checkout> [--n=200] [--clients=16] [--rounds=4]");
const N = Number(args.get("n") ?? 200);
const CLIENTS = Number(args.get("clients") ?? 16);
const ROUNDS = Number(args.get("rounds") ?? 4);
const SECONDS = Number(args.get("seconds") ?? 4);
const MINERS = Number(args.get("miners") ?? 1);
const K = Number(args.get("k") ?? 1);
/** "static": the dev key (no per-request KeyRegistry calls); "managed": a managed key with a token budget (admit + settle). */
const KEY = args.get("key") ?? "static";
/** Sequential requests go in blocks of this many to one side, then the other: 1 alternates every request. */
const BLOCK = Number(args.get("block") ?? 1);

type Stack = Awaited<ReturnType<typeof StackModule.startStack>>;
const mods: Record<"A" | "B", typeof StackModule> = {
  A: await import(resolve(BASE, "bench/lib/stack.ts")),
  B: await import("./lib/stack.ts"),
};
/** Each side's test vars (its own ADMIN_SECRET), from the same module instance its stack started with. */
const vars: Record<"A" | "B", Readonly<Record<string, string>>> = {
  A: (await import(resolve(BASE, "test/helpers/network.ts"))).TEST_VARS,
  B: (await import("../test/helpers/network.ts")).TEST_VARS,
};

/** A managed key with a budget far beyond the run, so every request reserves and settles. */
async function managedKey(name: "A" | "B", url: string): Promise<string> {
  const res = await fetch(`${url}/admin/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${vars[name].ADMIN_SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ owner: "bench", name: "bench", token_budget: 1_000_000_000 }),
  });
  const body = (await res.json()) as { key?: string };
  if (!res.ok || !body.key) throw new Error(`${name}: managed key: ${res.status} ${JSON.stringify(body)}`);
  return body.key;
}

async function side(name: "A" | "B"): Promise<{ stack: Stack; target: Target }> {
  const stack = await mods[name].startStack({ persist: "disk", miners: MINERS, concurrency: 64 });
  const sid = K > 1 ? await mods[name].createSession(stack.router, K, MINERS) : "";
  const key = KEY === "managed" ? await managedKey(name, stack.router.url) : "dev-key";
  const target: Target = {
    name,
    url: `${stack.router.url}/api/v1/completions${sid ? `/${sid}` : ""}`,
    headers: { authorization: `Bearer ${key}` },
    body: (i: number) => ({ prompt: `bench ${i % 7}`, max_tokens: 1 }),
  };
  return { stack, target };
}

const sides = { A: await side("A"), B: await side("B") };
/** A, B, B, A, … so neither side always goes first. */
const order = (i: number): ("A" | "B")[] => (i % 2 ? ["A", "B"] : ["B", "A"]);

const seq: Record<string, number[]> = { A: [], B: [] };
for (let b = -Math.ceil(30 / BLOCK); b < Math.ceil(N / BLOCK); b++) {
  for (const k of order(b)) {
    for (let j = 0; j < BLOCK; j++) {
      const a = await call(sides[k].target, b * BLOCK + j);
      if (a.status !== 200) throw new Error(`${k}: ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
      if (b >= 0) seq[k].push(a.ms);
    }
  }
}
const seqLoad = loadLine();

const loop: Record<string, { ok: number; s: number; cpu: number; lat: number[] }> = {
  A: { ok: 0, s: 0, cpu: 0, lat: [] },
  B: { ok: 0, s: 0, cpu: 0, lat: [] },
};
if (ROUNDS > 0) for (const k of ["A", "B"] as const) await closedLoop(sides[k].target, 4, 1);
for (let r = 0; r < ROUNDS; r++) {
  for (const k of order(r)) {
    const pid = sides[k].stack.router.workerdPid();
    const c0 = cpuMs(pid);
    const x = await closedLoop(sides[k].target, CLIENTS, SECONDS);
    loop[k].cpu += cpuMs(pid) - c0;
    loop[k].ok += x.ok;
    loop[k].s += x.seconds;
    loop[k].lat.push(...x.latencies);
  }
}

console.log(`A = ${BASE}, B = this tree; k = ${K}, ${MINERS} miner(s) each, state on disk, ${KEY} key, sequential blocks of ${BLOCK}`);
for (const k of ["A", "B"] as const)
  console.log(`${k} sequential (${seq[k].length}): p50 ${fx(pct(seq[k], 50))} p90 ${fx(pct(seq[k], 90))} p99 ${fx(pct(seq[k], 99))} ms`);
console.log(`B/A sequential p50 ${fx(pct(seq.B, 50) / pct(seq.A, 50))}   [${seqLoad}]`);
if (ROUNDS > 0) {
  const rate = (k: "A" | "B") => loop[k].ok / loop[k].s;
  for (const k of ["A", "B"] as const)
    console.log(
      `${k} ${CLIENTS} clients: ${fx(rate(k), 1)} tasks/s, workerd ${fx(loop[k].cpu / loop[k].ok)} ms CPU/task, p50 ${fx(pct(loop[k].lat, 50), 1)} ms`,
    );
  console.log(`B/A tasks/s ${fx(rate("B") / rate("A"))}   [${loadLine()}]`);
}
await Promise.all([sides.A.stack.stop(), sides.B.stack.stop()]);
process.exit(0);
