import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { MIN_DECLARED_TOKENS_PER_S } from "../../shared/api.ts";
import type { DeviceChoice } from "./engine-types.ts";
import type { LogFormat } from "./log.ts";

// Command-line options. Kept apart from cli.ts so they can be tested without starting anything.

/** TEST ONLY: the ways `--test-dishonest` can make a miner cheat (implemented in dishonest.ts). */
export const DISHONEST_MODES = [
  "junk",
  "wrong-model",
  "bad-commit",
  "replay-signature",
  "silent-after-ack",
  "context-refusal",
  "copy",
  "usage-inflate",
  "oversize",
  "lying-validator",
  "junk-embeddings",
  "perturbed-weights",
  "quantized",
] as const;
export type DishonestMode = (typeof DISHONEST_MODES)[number];

export function isDishonestMode(v: string): v is DishonestMode {
  return (DISHONEST_MODES as readonly string[]).includes(v);
}

export interface CliOptions {
  router: string;
  /** Undefined: the builtin model (resolved by cli.ts, which owns the lazy import of the model builder). */
  model: string | undefined;
  device: DeviceChoice;
  concurrency: number;
  /** onnxruntime intra-op threads; 0 leaves its default (all cores). */
  threads: number;
  /** Feature-extraction model for validation work; null: none (this miner does no validation). */
  embeddingModel: string | null;
  keyFile: string;
  cacheDir: string;
  name: string | undefined;
  /**
   * Stake, tUSD base units (6 decimals: 1000000 = 1 tUSD). With a router that has a chain, the wallet's stake in
   * the staking contract is topped up to this before registering (stake.ts); without one it is only declared.
   */
  stake: number;
  /** The chain's JSON-RPC URL, when the one the router names (GET /api/v1/chain) is not reachable from here. */
  chainRpc: string | undefined;
  /** Decode speed to declare, tokens/s per task; undefined: measured at startup (cli.ts, speed.ts). */
  tokensPerS: number | undefined;
  drainMs: number;
  logFormat: LogFormat;
  quiet: boolean;
  help: boolean;
  version: boolean;
  // ── packaging (config file, status): see config-file.ts and status.ts ──
  /** The running agent's status file, read by `miner-agent status`; default beside the key file. */
  statusFile: string;
  /** A client API key to read this miner's earnings and reputation from the router (status line, status file). */
  apiKey: string | undefined;
  /** TEST ONLY (not in --help): lie in this way, for the cheat suite. */
  testDishonest: DishonestMode | undefined;
  /** TEST ONLY (not in --help): hold each result this long before precommitting (a slow miner). */
  testDelayMs: number;
  /** BENCH ONLY (not in --help): "zero-cost" runs zero-cost-engine.ts (model bench/zero-cost, no inference). */
  testEngine: "zero-cost" | undefined;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export const HELP = `Usage: miner-agent [options]
       miner-agent doctor [options]   check Node, onnxruntime, the cache, the router and the wallet
       miner-agent status [options]   show what the running agent is doing (its status file)

Serve AI inference for an edge inference network router: registers a wallet, joins the sessions the router
assigns and runs their tasks locally with transformers.js.

Options:
  --router <url>         router base URL (env ROUTER_URL; default http://127.0.0.1:8787)
  --model <id|folder>    model id or local model folder (default: the builtin edge/tiny-gpt2)
  --device <d>           cpu | webgpu | auto (default cpu)
  --concurrency <n>      tasks run at once, across all sessions (1-256, default 1)
  --threads <n>          onnxruntime threads per inference (default 0: all cores); use 1 when
                         several miners share a machine
  --embedding-model <id|folder|none>
                         model for validation work (similarity consensus); loaded on first use
                         (default: the builtin edge/tiny-embed; none: do no validation)
  --key-file <path>      wallet key file, created on first run (env MINER_KEY_FILE;
                         default ~/.miner-agent/key.json)
  --cache-dir <path>     model cache folder (env MINER_CACHE_DIR; default ~/.miner-agent/models)
  --name <label>         a label shown by the router (max 64 chars)
  --stake <n>            stake in tUSD base units (6 decimals: 1000000 = 1 tUSD; default 0). With a
                         router on a chain, the wallet stakes on chain until its stake is n (only the
                         difference; the router's development faucet funds it when it is on), then
                         registers; the router counts what the staking contract holds. Without a
                         chain the number is only declared (development routers only)
  --chain-rpc <url>      the chain's JSON-RPC URL (default: the one the router names)
  --tokens-per-s <n>     decode speed to declare, tokens/s per task at full concurrency; the router
                         budgets each precommit deadline from it (default: measured at startup)
  --drain-ms <ms>        on Ctrl-C, how long running tasks may finish (default 10000)
  --log-format <f>       text | json (json: one object per line) (default text)
  --quiet                only warnings, errors and essential notices
  --config <path>        JSON file of options, long names as keys; flags override it (env
                         MINER_CONFIG; default ~/.miner-agent/config.json when it exists)
  --status-file <path>   where the running agent writes its status (default: status.json beside
                         the key file)
  --api-key <key>        a client API key, to show this miner's earnings and reputation (env
                         MINER_API_KEY)
  -h, --help             show this help
  -v, --version          print the version

Ctrl-C once drains and exits; twice exits at once.`;

const OPTIONS = {
  router: { type: "string" },
  model: { type: "string" },
  device: { type: "string" },
  concurrency: { type: "string" },
  threads: { type: "string" },
  "embedding-model": { type: "string" },
  "key-file": { type: "string" },
  "cache-dir": { type: "string" },
  name: { type: "string" },
  stake: { type: "string" },
  "chain-rpc": { type: "string" },
  "tokens-per-s": { type: "string" },
  "drain-ms": { type: "string" },
  "log-format": { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "v" },
  // Packaging: config file (read by config-file.ts before parsing), status file, earnings key.
  config: { type: "string" },
  "status-file": { type: "string" },
  "api-key": { type: "string" },
  // Test-only, deliberately left out of HELP: makes this miner cheat or slow (see dishonest.ts).
  "test-dishonest": { type: "string" },
  "test-delay-ms": { type: "string" },
  "test-engine": { type: "string" },
} as const;

function parseOptions(argv: string[]) {
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: false, options: OPTIONS }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function parseCliArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): CliOptions {
  const values = parseOptions(argv);

  const router = values.router ?? (env.ROUTER_URL || "http://127.0.0.1:8787");
  let url: URL;
  try {
    url = new URL(router);
  } catch {
    throw new UsageError(`--router: not a URL: ${router}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--router: expected an http:// or https:// URL, got ${router}`);
  }

  const device = values.device ?? "cpu";
  if (device !== "cpu" && device !== "webgpu" && device !== "auto") {
    throw new UsageError(`--device: expected cpu, webgpu or auto, got ${device}`);
  }
  const logFormat = values["log-format"] ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`--log-format: expected text or json, got ${logFormat}`);
  }
  const name = values.name;
  if (name !== undefined && (name.length === 0 || name.length > 64)) {
    throw new UsageError("--name: 1 to 64 characters");
  }
  let model = values.model;
  if (model !== undefined && model.trim() === "") throw new UsageError("--model: empty");
  // BENCH ONLY: the zero-cost engine is chosen here, by this miner's operator, and nowhere else; it serves its
  // own model id (bench/…), which `--model` cannot name, so no real model's tasks ever reach it.
  const testEngine = values["test-engine"] ?? (env.MINER_TEST_ENGINE || undefined);
  if (testEngine !== undefined && testEngine !== "zero-cost") throw new UsageError(`--test-engine: expected zero-cost, got ${testEngine}`);
  if (model?.startsWith("bench/")) throw new UsageError("--model: bench/ models are served only by --test-engine");
  if (testEngine) model = "bench/zero-cost";
  // The builtin embedder's id (model/embedding.ts), spelled out so parsing options loads no model code.
  const embeddingModel = values["embedding-model"] ?? "edge/tiny-embed";
  if (embeddingModel.trim() === "") throw new UsageError("--embedding-model: empty");
  const dishonest = values["test-dishonest"] ?? (env.MINER_TEST_DISHONEST || undefined);
  if (dishonest !== undefined && !isDishonestMode(dishonest)) {
    throw new UsageError(`--test-dishonest: expected one of ${DISHONEST_MODES.join(", ")}, got ${dishonest}`);
  }

  return {
    router: url.href.replace(/\/+$/, ""),
    model,
    testEngine,
    device,
    concurrency: intOption("--concurrency", values.concurrency, 1, 1, 256),
    threads: intOption("--threads", values.threads, 0, 0, 256),
    embeddingModel: embeddingModel === "none" || testEngine ? null : embeddingModel,
    keyFile: values["key-file"] ?? (env.MINER_KEY_FILE || join(homedir(), ".miner-agent", "key.json")),
    cacheDir: values["cache-dir"] ?? (env.MINER_CACHE_DIR || join(homedir(), ".miner-agent", "models")),
    name,
    stake: intOption("--stake", values.stake, 0, 0, Number.MAX_SAFE_INTEGER),
    chainRpc: urlOption("--chain-rpc", values["chain-rpc"] ?? (env.MINER_CHAIN_RPC || undefined)),
    tokensPerS: speedOption(values["tokens-per-s"]),
    drainMs: intOption("--drain-ms", values["drain-ms"], 10_000, 0, 24 * 3600_000),
    logFormat,
    quiet: values.quiet ?? false,
    help: values.help ?? false,
    version: values.version ?? false,
    statusFile:
      values["status-file"] ??
      join(dirname(values["key-file"] ?? (env.MINER_KEY_FILE || join(homedir(), ".miner-agent", "key.json"))), "status.json"),
    apiKey: values["api-key"] ?? (env.MINER_API_KEY || undefined),
    testDishonest: dishonest,
    testDelayMs: intOption("--test-delay-ms", values["test-delay-ms"] ?? (env.MINER_TEST_DELAY_MS || undefined), 0, 0, 600_000),
  };
}

/** `--tokens-per-s`: a positive decimal, at least the router's minimum (shared/api.ts MIN_DECLARED_TOKENS_PER_S). */
function speedOption(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !(n >= MIN_DECLARED_TOKENS_PER_S && n <= 10_000_000)) {
    throw new UsageError(`--tokens-per-s: expected a number from ${MIN_DECLARED_TOKENS_PER_S} to 10000000, got ${raw}`);
  }
  return n;
}

function urlOption(flag: string, raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  if (!/^https?:\/\/\S+$/.test(raw)) throw new UsageError(`${flag}: expected an http:// or https:// URL, got ${raw}`);
  return raw;
}

function intOption(flag: string, raw: string | undefined, def: number, min: number, max: number): number {
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw.trim())) throw new UsageError(`${flag}: expected a whole number, got ${raw}`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(`${flag}: expected ${min}–${max}, got ${raw}`);
  return n;
}
