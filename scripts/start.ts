// `npm start`: a whole local network — a local EVM chain (ganache, contracts deployed, persisted in .wrangler/chain;
// scripts/dev-chain.ts), the router under `wrangler dev` (Durable Objects and R2 persisted in .wrangler/state between
// restarts) plus one miner agent on the built-in model. Ctrl-C stops all three. CHAIN_RPC_URL in the environment or
// .dev.vars: use that chain instead of starting one.
import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { startDevChain } from "./dev-chain.ts";
import { ensureDevVars, firstApiKey } from "./dev-vars.ts";

const ROOT = resolve(import.meta.dirname, "..");
const PORT = Number(process.env.PORT ?? 8787);
const URL = `http://127.0.0.1:${PORT}`;

// Local secrets: the first run writes fresh random ones to .dev.vars (wrangler dev reads it).
const devVars = ensureDevVars(ROOT);
if (devVars.written.length > 0) console.log(`Wrote ${devVars.written.join(", ")} to ${devVars.path} (fresh random local secrets).`);
const API_KEY = firstApiKey(devVars.vars.API_KEYS);

function run(label: string, cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => console.log(`[${label}] ${line}`));
  }
  child.on("exit", (code, signal) => {
    console.log(`[${label}] exited (${signal ?? code})`);
    if (!stopping) shutdown(1);
  });
  return child;
}

let stopping = false;
const children: ChildProcess[] = [];
function shutdown(code = 0): void {
  if (stopping) return;
  stopping = true;
  for (const c of children.reverse()) c.kill("SIGINT");
  setTimeout(() => process.exit(code), 12_000).unref();
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once("exit", r))))).then(() => process.exit(code));
}
process.on("SIGINT", () => shutdown(0));
process.on("SIGTERM", () => shutdown(0));

// The chain first: the router is given its URL and contract addresses.
const chain = await startDevChain(ROOT, devVars.vars, (line) => console.log(`[chain] ${line}`)).catch((err: Error) => {
  console.error(`[chain] ${err.message}`);
  process.exit(1);
});
if (chain.child) {
  const child = chain.child;
  children.push(child);
  child.on("exit", (code, signal) => {
    console.log(`[chain] exited (${signal ?? code})`);
    if (!stopping) shutdown(1);
  });
}
console.log(`[chain] ${chain.summary.split("\n")[0]}`);

children.push(
  run("router", process.execPath, [
    join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "--port",
    String(PORT),
    "--persist-to",
    ".wrangler/state",
    ...Object.entries(chain.vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
    // wrangler dev takes from .dev.vars only the secrets named in [secrets].required; this optional one (x402's
    // in-process facilitator) is passed on, or the x402 routes would be off.
    ...(devVars.vars.FACILITATOR_KEY ? ["--var", `FACILITATOR_KEY:${devVars.vars.FACILITATOR_KEY}`] : []),
  ]),
);

for (let i = 0; ; i++) {
  try {
    const ping = await fetch(`${URL}/api/v1/ping`);
    if (ping.ok) break;
    // The router refuses to serve with unfit secrets (503 configuration_error): say why and stop.
    console.error(`router refuses to serve (HTTP ${ping.status}): ${await ping.text()}\nCheck ${devVars.path}.`);
    shutdown(1);
    break;
  } catch {}
  if (stopping) break;
  if (i > 600) {
    console.error("router did not start in 120 s");
    shutdown(1);
  }
  await new Promise((r) => setTimeout(r, 200));
}

// Not when the router refused to serve (shutdown is under way).
if (!stopping) {
  children.push(
    run("miner", process.execPath, [
      join(ROOT, "miner-agent/bin/miner-agent.js"),
      "--router",
      URL,
      "--key-file",
      ".miner/key.json",
      "--cache-dir",
      ".miner/models",
      "--concurrency",
      process.env.MINER_CONCURRENCY ?? "2",
    ]),
  );

  console.log(`
  Router listening on ${URL}  (API key for development: ${API_KEY}, from .dev.vars)
  A miner agent is starting on the built-in model (edge/tiny-gpt2).

  Try:
    curl -s ${URL}/api/v1/completions \\
      -H 'Authorization: Bearer ${API_KEY}' -H 'Content-Type: application/json' \\
      -d '{"prompt":"The edge network","max_tokens":32}'

  Streamed:  add "stream": true   ·   Status: curl -s ${URL}/api/v1/status -H 'Authorization: Bearer ${API_KEY}'
  Portal:    ${URL}/portal/  (sign in with the key above: the network live, sessions, tasks, a playground)
  ${chain.summary.replace(/\n/g, "\n  ")}
  Ctrl-C stops the router, the miner${chain.child ? " and the chain" : ""}.
`);
}
