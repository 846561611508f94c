import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { build } from "esbuild";
import { Log, LogLevel, Miniflare, type MiniflareOptions } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { freePort, ROOT, TEST_VARS, tempDir } from "../../test/helpers/network.ts";
import { workerdProcesses } from "./proc.ts";

// The router for the router-isolated benchmark: the Worker and its Durable Objects under Miniflare's own HTTP
// server (workerd), without `wrangler dev`'s proxy in front. Bindings come from wrangler.toml through wrangler's
// own converter, so the objects, SQLite classes and R2 are the ones `wrangler dev` and production get.

export interface MiniflareRouter {
  url: string;
  /** "disk": Durable Object SQLite and R2 under a temporary folder (as `wrangler dev --persist-to`); "memory": none. */
  persist: "disk" | "memory";
  /** The workerd process, for its CPU time (/proc). */
  workerdPid: () => number | undefined;
  /** The bundled Worker (bench/lib/profile.ts maps its lines back to modules). */
  bundlePath: string;
  /** Restarts the runtime (a router crash): every object is evicted, every socket and request is cut; state stays. */
  restart(): Promise<void>;
  /** What the Worker printed (console.log) so far. */
  log: () => string;
  stop(): Promise<void>;
}

/** Bundles the Worker the way wrangler does (esbuild, ESM, workerd conditions). */
async function bundleWorker(): Promise<string> {
  const outdir = tempDir("bench-worker");
  await build({
    entryPoints: [join(ROOT, "workers/index.ts")],
    outfile: join(outdir, "router.bundle.js"),
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["cloudflare:*", "node:*"],
    loader: { ".txt": "text", ".html": "text", ".sql": "text", ".bin": "binary" },
    logLevel: "warning",
  });
  return join(outdir, "router.bundle.js");
}

/** The workerd processes started by this process (Miniflare's runtime is a child of the Node process). */
export const childWorkerds = (): number[] =>
  workerdProcesses()
    .filter((w) => w.ppid === process.pid)
    .map((w) => w.pid);

/** This router's own workerd (one process may run several routers, e.g. an A/B pair); after a restart, the new one. */
function ownWorkerd(others: Set<number>): () => number | undefined {
  let pid: number | undefined;
  return () => {
    if (pid === undefined || childWorkerds().indexOf(pid) < 0) pid = childWorkerds().find((p) => !others.has(p));
    return pid;
  };
}

export async function startMiniflareRouter(
  opts: {
    persist?: "disk" | "memory";
    vars?: Record<string, string>;
    rateLimit?: number;
    compatibilityDate?: string;
    /** Open workerd's DevTools inspector on this port (bench/lib/profile.ts samples the Worker's CPU through it). */
    inspectorPort?: number;
  } = {},
): Promise<MiniflareRouter> {
  const persist = opts.persist ?? "disk";
  const scriptPath = await bundleWorker();
  const { workerOptions } = unstable_getMiniflareWorkerOptions(join(ROOT, "wrangler.toml"));
  const port = await freePort();
  const state = persist === "disk" ? tempDir("bench-router-state") : undefined;
  const limit = opts.rateLimit ?? 1_000_000;
  const ratelimits = Object.fromEntries(
    Object.entries(workerOptions.ratelimits ?? {}).map(([name, r]) => [name, { ...r, simple: { ...r.simple, limit } }]),
  );
  let output = "";
  const { ratelimits: _r, assets: _a, ...rest } = workerOptions as typeof workerOptions & { assets?: unknown };
  // wrangler's converter types its options for its own (newer) miniflare: the fields are the same.
  const options = {
    ...rest,
    rootPath: dirname(scriptPath),
    modulesRoot: dirname(scriptPath),
    // The installed miniflare's workerd may predate wrangler.toml's date (wrangler carries a newer one): the newest it has.
    compatibilityDate: opts.compatibilityDate ?? rest.compatibilityDate,
    // One module, given whole: Miniflare would otherwise trace its imports, and the bundle keeps a few optional
    // dynamic imports (never taken) that it cannot resolve.
    modules: [{ type: "ESModule", path: scriptPath, contents: readFileSync(scriptPath, "utf8") }],
    modulesRules: undefined,
    ratelimits,
    bindings: { ...(workerOptions.bindings as Record<string, unknown>), ...TEST_VARS, ...opts.vars },
    host: "127.0.0.1",
    port,
    ...(opts.inspectorPort ? { inspectorPort: opts.inspectorPort } : {}),
    log: new Log(LogLevel.WARN),
    cf: false, // no fetch of Cloudflare's request.cf data: the machine has no network
    durableObjectsPersist: state ? join(state, "do") : false,
    r2Persist: state ? join(state, "r2") : false,
    handleRuntimeStdio(stdout: Readable, stderr: Readable) {
      stdout.on("data", (d) => (output += d));
      stderr.on("data", (d) => (output += d));
    },
  } as MiniflareOptions;
  const others = new Set(childWorkerds());
  const mf = new Miniflare(options);
  const url = (await mf.ready).origin;
  const res = await fetch(`${url}/api/v1/ping`);
  if (!res.ok) throw new Error(`router under Miniflare answers /ping ${res.status}: ${await res.text()}`);
  return {
    url,
    persist,
    bundlePath: scriptPath,
    workerdPid: ownWorkerd(others),
    restart: () => mf.setOptions(options),
    log: () => output,
    stop: () => mf.dispose(),
  };
}
