import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// The unit pool's own secrets (the router keeps none in wrangler.toml): local development, the `dev-key` of
// test/unit/helpers.ts, fresh random secrets per run. Its rate limits are out of the way: every test file
// shares one limiter and one client IP; test/integration/attacks-secrets.test.ts proves the limits.
const UNIT_SECRETS = {
  ROUTER_ENV: "development",
  API_KEYS: "dev:dev-key",
  MINER_TOKEN_SECRET: randomBytes(32).toString("hex"),
  PAYLOAD_KEY_SEEDS: `1:${randomBytes(32).toString("hex")}`,
  ADMIN_SECRET: randomBytes(32).toString("base64url"),
  ROUTER_SIGNING_KEY: `0x${randomBytes(32).toString("hex")}`,
};
const unlimited = (namespace_id: string) => ({ namespace_id, simple: { limit: 1_000_000, period: 10 as const } });

/** A project of tests inside the Workers runtime (real Durable Objects, SQLite, alarms, hibernating WebSockets). */
function workersProject(test: { name: string; include: string[]; exclude?: string[] }, vars: Record<string, string> = {}) {
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          // Test miners answer in milliseconds: a small prefill and per-token allowance keep the floor of client
          // deadlines (session-queue/fair-deadlines.ts) low enough for sub-second timeout tests.
          bindings: {
            BLOCK_INTERVAL_MS: "200",
            MIN_STAKE: "100",
            DEADLINE_PREFILL_MS: "100",
            DEADLINE_TOKEN_MS: "2",
            VERIFY_TIMEOUT_MS: "3000",
            ...UNIT_SECRETS,
            ...vars,
          },
          ratelimits: {
            RATE_LIMIT_KEY: unlimited("1101"),
            RATE_LIMIT_MINER: unlimited("1102"),
            RATE_LIMIT_IP: unlimited("1103"),
            RATE_LIMIT_AUTH_FAILURES: unlimited("1104"),
          },
        },
      }),
    ],
    test: { ...test, testTimeout: 30_000 },
  };
}

// Unit tests run inside the Workers runtime (one project with the default one-shard pool, one with four shards);
// integration tests run in Node and start the real router (wrangler dev) and real miner processes.
export default defineConfig({
  test: {
    // The router's one JSON line per request (workers/middleware/request-log.ts) would drown the unit tests'
    // output; test/unit/keys.test.ts reads them with a spy.
    onConsoleLog: (log) => !log.startsWith('{"msg":"request"'),
    projects: [
      workersProject({ name: "unit", include: ["test/unit/**/*.test.ts"], exclude: ["test/unit/sharded/**"] }),
      // The same runtime with a sharded pool, as just redeployed from one pool object: the shards' own wiring and
      // the handover (test/unit/sharded/).
      workersProject({ name: "unit-sharded", include: ["test/unit/sharded/**/*.test.ts"] }, { POOL_SHARDS: "4", POOL_SHARDS_FROM: "1" }),
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // The fuzz test imports the router's Hono app to list its routes; in Node the Workers runtime module is a stub.
          alias: { "cloudflare:workers": resolve(import.meta.dirname, "test/helpers/workers-runtime-stub.ts") },
          pool: "forks",
          // The portal is built once here, not by wrangler before each of the run's ~45 router starts.
          globalSetup: ["test/helpers/global-setup.ts"],
          // One wrangler + miners at a time: the machine has two cores.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
