import { api, type Miner, startMiner, until } from "../../test/helpers/network.ts";
import { type MiniflareRouter, startMiniflareRouter } from "./miniflare-router.ts";

// Our side of the router benchmark and the soak: the router under Miniflare and real miner-agent processes
// running the zero-cost engine (miner-agent/src/zero-cost-engine.ts), selected by the miners' own bench-only
// flag. The router's default session serves the zero-cost model, so no real model is involved.

export const ZERO_COST_MODEL = "bench/zero-cost";
/** workerd's compatibility dates stop at its build: the installed miniflare's is older than wrangler.toml's date. */
const COMPATIBILITY_DATE = "2026-08-06";

export interface Stack {
  router: MiniflareRouter;
  miners: Miner[];
  startMiner(i: number): Promise<Miner>;
  stop(): Promise<void>;
}

export async function startStack(opts: {
  persist: "disk" | "memory";
  miners: number;
  concurrency: number;
  vars?: Record<string, string>;
  inspectorPort?: number;
}): Promise<Stack> {
  const router = await startMiniflareRouter({
    persist: opts.persist,
    inspectorPort: opts.inspectorPort,
    compatibilityDate: COMPATIBILITY_DATE,
    vars: { DEFAULT_MODEL: ZERO_COST_MODEL, ...opts.vars },
  });
  const keys: string[] = [];
  const launch = async (i: number): Promise<Miner> => {
    const m = await startMiner(router.url, {
      name: `bench-${i}`,
      concurrency: opts.concurrency,
      keyFile: keys[i],
      args: ["--test-engine", "zero-cost", "--tokens-per-s", "10000"],
      env: { MINER_BENCH_TRACE: "1" },
    });
    keys[i] = m.keyFile;
    return m;
  };
  const miners: Miner[] = [];
  try {
    for (let i = 0; i < opts.miners; i++) miners.push(await launch(i));
    await Promise.all(miners.map((m) => m.waitFor("ready", undefined, 90_000)));
  } catch (err) {
    await Promise.all(miners.map((m) => m.stop("SIGKILL")));
    await router.stop();
    throw err;
  }
  return {
    router,
    miners,
    startMiner: launch,
    stop: async () => {
      await Promise.all(miners.map((m) => m.stop("SIGKILL")));
      await router.stop();
    },
  };
}

/** A session with `k` replicas per task over `miners` miners, once they have all joined it. */
export async function createSession(router: { url: string }, k: number, miners: number): Promise<string> {
  const created = await api(router, "/api/v1/sessions", {
    body: { deposit: 1e8, redundancy: k, max_miners: miners, model: ZERO_COST_MODEL },
  });
  if (created.status !== 200 && created.status !== 201) throw new Error(`session: ${JSON.stringify(created.body)}`);
  const sid = created.body.id as string;
  await until(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= miners, 60_000);
  return sid;
}
