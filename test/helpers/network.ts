import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { signingDomain } from "../../shared/signing.ts";
import { authoriseRouter, type LocalChain } from "./chain.ts";

// Starts the real network for integration tests and benchmarks: the router under `wrangler dev` (workerd,
// real Durable Objects and local R2) and miner-agent processes speaking the real protocol.

export const ROOT = resolve(import.meta.dirname, "../..");
export const API_KEY = "dev-key";
/**
 * What every test router runs with (the router holds no secret of its own): local development, the key
 * above, and fresh random secrets per test process (kept across restarts of a router in the same file).
 * `startRouter({vars})` overrides any of them.
 */
export const TEST_VARS: Readonly<Record<string, string>> = {
  ROUTER_ENV: "development",
  API_KEYS: `dev:${API_KEY}`,
  MINER_TOKEN_SECRET: randomBytes(32).toString("hex"),
  PAYLOAD_KEY_SEEDS: `1:${randomBytes(32).toString("hex")}`,
  ADMIN_SECRET: randomBytes(32).toString("base64url"),
  ROUTER_SIGNING_KEY: `0x${randomBytes(32).toString("hex")}`,
};
/** A `[vars]` value of wrangler.toml. */
function tomlVar(name: string): string {
  const m = new RegExp(`^${name} = "(.*)"$`, "m").exec(readFileSync(join(ROOT, "wrangler.toml"), "utf8"));
  if (!m) throw new Error(`wrangler.toml has no var ${name}`);
  return m[1];
}
/**
 * The EIP-712 domain a test router signs under (wrangler.toml's ROUTER_NAME and CHAIN_ID, no ROUTER_ADDRESS),
 * unless `startRouter({vars})` changes them: what a hand-driven miner signs precommits and result writes for.
 */
export const ROUTER_DOMAIN = signingDomain({ name: tomlVar("ROUTER_NAME"), chain_id: Number(tomlVar("CHAIN_ID")), address: null });
/** Shared model cache so the built-in model is built once per machine, not once per miner. */
export const MODEL_CACHE = join(ROOT, ".cache", "models");

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `${prefix}-`));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Kills a detached child and everything it started (wrangler starts workerd). */
async function killTree(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  try {
    process.kill(-child.pid!, signal);
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {}
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

export interface Router {
  url: string;
  port: number;
  persistDir: string;
  process: ChildProcess;
  log: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** The `[[ratelimits]]` bindings of wrangler.toml (workers/middleware/rate-limit.ts). */
export type RateLimitName = "RATE_LIMIT_KEY" | "RATE_LIMIT_MINER" | "RATE_LIMIT_IP" | "RATE_LIMIT_AUTH_FAILURES";

/**
 * wrangler.toml with other rate limits (they are bindings, not vars), written to a temporary folder, so no
 * developer's .dev.vars sits beside it. With `prebuilt`, without its [build] step: wrangler would rebuild the
 * portal before every router start.
 */
function testConfig(limits: Partial<Record<RateLimitName, number>>, prebuilt: boolean): string {
  let toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  if (prebuilt) toml = toml.replace(/^\[build\]\n(?:[^[\n].*\n)*\n*/m, "");
  // Paths in it are relative to its folder: point them (main, the portal's assets and build) back at the repository.
  toml = toml
    .replace(/^main = ".*"$/m, `main = ${JSON.stringify(join(ROOT, "workers/index.ts"))}`)
    .replace(/^directory = "(.*)"$/m, (_, dir: string) => `directory = ${JSON.stringify(join(ROOT, dir))}`)
    .replace(/^watch_dir = "(.*)"$/m, (_, dir: string) => `watch_dir = ${JSON.stringify(join(ROOT, dir))}\ncwd = ${JSON.stringify(ROOT)}`);
  for (const [name, limit] of Object.entries(limits)) {
    const entry = new RegExp(`(name = "${name}"\\s*\\nnamespace_id = "\\d+"\\s*\\nsimple = \\{ limit = )\\d+`);
    if (!entry.test(toml)) throw new Error(`no [[ratelimits]] entry ${name} in wrangler.toml`);
    toml = toml.replace(entry, `$1${limit}`);
  }
  const path = join(tempDir("router-config"), "wrangler.toml");
  writeFileSync(path, toml);
  return path;
}

export async function startRouter(
  opts: {
    port?: number;
    persistDir?: string;
    /** Added to (and overriding) TEST_VARS. */
    vars?: Record<string, string>;
    /** Requests per 10 s for some rate limiters, instead of wrangler.toml's. */
    rateLimits?: Partial<Record<RateLimitName, number>>;
    /** Return a router that answers 503 configuration_error (its secrets are unfit) instead of failing. */
    allowConfigError?: boolean;
    /**
     * A local chain (test/helpers/chain.ts startChain) the router uses: CHAIN_RPC_URL, TOKEN_ADDRESS, STAKING_ADDRESS
     * and FACILITATOR_KEY (the chain's facilitator account) are set, and the router's ROUTER_SIGNING_KEY is funded
     * with ETH and made a slasher and a minter before the router starts. `vars` still override all of them.
     */
    chain?: LocalChain;
  } = {},
): Promise<Router> {
  const persistDir = opts.persistDir ?? tempDir("router-state");
  const args = ["dev", "--ip", "127.0.0.1", "--persist-to", persistDir];
  // The integration tests' global setup (test/helpers/global-setup.ts) builds the portal once for the whole run.
  const prebuilt = process.env.TEST_PORTAL_PREBUILT === "1";
  if (opts.rateLimits || prebuilt) args.push("--config", testConfig(opts.rateLimits ?? {}, prebuilt));
  const vars: Record<string, string> = { ...TEST_VARS, ...opts.vars };
  if (opts.chain) {
    const chainVars = {
      CHAIN_RPC_URL: opts.chain.rpcUrl,
      CHAIN_ID: String(opts.chain.chainId),
      TOKEN_ADDRESS: opts.chain.token,
      STAKING_ADDRESS: opts.chain.staking,
      FACILITATOR_KEY: opts.chain.facilitator.privateKey,
    };
    Object.assign(vars, chainVars, opts.vars);
    await authoriseRouter(opts.chain, vars.ROUTER_SIGNING_KEY as `0x${string}`);
  }
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  // A port found free can be taken by a parallel suite before workerd binds it (wrangler also picks some of its
  // own that way): a start that fails only for that is tried again on fresh ports.
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      return await launchRouter(args, port, persistDir, opts.allowConfigError ?? false);
    } catch (err) {
      if (!(err instanceof AddressInUse) || attempt >= 4) throw err;
      await sleep(250 * attempt);
    }
  }
}

class AddressInUse extends Error {}

async function launchRouter(baseArgs: string[], port: number, persistDir: string, allowConfigError: boolean): Promise<Router> {
  const args = [...baseArgs, "--port", String(port), "--inspector-port", String(await freePort())];
  // Under this Node (22), whatever PATH says: wrangler needs Node ≥ 22.
  const child = spawn(process.execPath, [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), ...args], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    // No Request.cf download (the router reads none): offline it is a failed fetch per start, then the fallback.
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = () => {
    const Failure = /Address already in use|EADDRINUSE/.test(output) ? AddressInUse : Error;
    return new Failure(`wrangler dev exited ${child.exitCode}:\n${output}`);
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw exited();
    try {
      // A bounded probe: whatever else may hold the port must not hang the start.
      const res = await fetch(`${url}/api/v1/ping`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) break;
      const refusal = await res.text();
      if (res.status === 503 && refusal.includes("configuration_error")) {
        if (allowConfigError) break;
        await killTree(child, "SIGKILL");
        throw new Error(`router refuses to serve: ${refusal}\n${output}`);
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("router refuses")) throw err;
    }
    await sleep(200);
  }
  if (Date.now() >= deadline) {
    await killTree(child, "SIGKILL");
    throw new Error(`router did not become ready:\n${output}`);
  }
  // Someone else's server on a port we lost would answer too; ours must still be running.
  if (child.exitCode !== null) throw exited();
  return { url, port, persistDir, process: child, log: () => output, stop: (signal) => killTree(child, signal) };
}

export interface MinerEvent {
  event: string;
  [k: string]: unknown;
}

export interface Miner {
  process: ChildProcess;
  keyFile: string;
  events: MinerEvent[];
  log: () => string;
  address: () => string | undefined;
  waitFor(event: string, pred?: (e: MinerEvent) => boolean, timeoutMs?: number): Promise<MinerEvent>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<number | null>;
}

export async function startMiner(
  routerUrl: string,
  opts: {
    keyFile?: string;
    concurrency?: number;
    name?: string;
    model?: string;
    /** onnxruntime threads; tests and benches run several miners on two cores. */
    threads?: number;
    args?: string[];
    env?: Record<string, string>;
    /** Another miner-agent command instead of this repository's (an installed package: `npx miner-agent`). */
    command?: { file: string; args: string[]; cwd: string };
  } = {},
): Promise<Miner> {
  const keyFile = opts.keyFile ?? join(tempDir("miner"), "key.json");
  const args = [
    ...(opts.command?.args ?? [join(ROOT, "miner-agent/bin/miner-agent.js")]),
    "--router",
    routerUrl,
    "--key-file",
    keyFile,
    "--cache-dir",
    MODEL_CACHE,
    "--concurrency",
    String(opts.concurrency ?? 1),
    "--threads",
    String(opts.threads ?? 1),
    "--log-format",
    "json",
    ...(opts.name ? ["--name", opts.name] : []),
    ...(opts.model ? ["--model", opts.model] : []),
    ...(opts.args ?? []),
  ];
  const child = spawn(opts.command?.file ?? process.execPath, args, {
    cwd: opts.command?.cwd ?? ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...opts.env },
  });
  const events: MinerEvent[] = [];
  const waiters: { event: string; pred: (e: MinerEvent) => boolean; resolve: (e: MinerEvent) => void }[] = [];
  let output = "";
  createInterface({ input: child.stdout! }).on("line", (line) => {
    output += line + "\n";
    let ev: MinerEvent;
    try {
      ev = JSON.parse(line) as MinerEvent;
    } catch {
      return;
    }
    if (typeof ev.event !== "string") return;
    events.push(ev);
    for (const w of [...waiters]) {
      if (w.event === ev.event && w.pred(ev)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(ev);
      }
    }
  });
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const miner: Miner = {
    process: child,
    keyFile,
    events,
    log: () => output,
    address: () => events.find((e) => typeof e.address === "string")?.address as string | undefined,
    waitFor(event, pred = () => true, timeoutMs = 60_000) {
      const seen = events.find((e) => e.event === event && pred(e));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`miner did not emit ${event} in ${timeoutMs} ms:\n${output.slice(-4000)}`)),
          timeoutMs,
        );
        waiters.push({
          event,
          pred,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
    stop: (signal) => killTree(child, signal, 15_000),
    exited,
  };
  return miner;
}

/** JSON call to the router with the development API key. */
export async function api<T = any>(
  router: { url: string },
  path: string,
  init: { method?: string; body?: unknown; key?: string | null; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.key !== null) headers.authorization = `Bearer ${init.key ?? API_KEY}`;
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${router.url}${path}`, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers,
    body: init.body === undefined ? undefined : typeof init.body === "string" ? init.body : JSON.stringify(init.body),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, headers: res.headers };
}

/** Reads an SSE completion: the `data:` payloads in order (the last is "[DONE]"). */
export async function sse(
  router: { url: string },
  path: string,
  body: unknown,
): Promise<{ status: number; events: string[]; headers: Headers }> {
  const res = await fetch(`${router.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  const events = text
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim());
  return { status: res.status, events, headers: res.headers };
}

export async function until<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(stepMs);
  }
}
