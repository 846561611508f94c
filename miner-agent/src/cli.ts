import { readFileSync } from "node:fs";
import { MinerAgent } from "./agent.ts";
import type { Engine, LoadEngineOptions } from "./engine-types.ts";
import { createLogger, describeError, type Logger } from "./log.ts";
import type { DishonestMode } from "./dishonest.ts";
import { HELP, parseCliArgs, UsageError, type CliOptions } from "./options.ts";
import { createLoadReporter } from "./progress.ts";
import { Validator } from "./validator.ts";
import { expandHome, loadOrCreateWallet, WalletError } from "./wallet.ts";

// `miner-agent`: parse options, load the wallet and the model, then run the agent until Ctrl-C.
// The engine and the model builder are imported lazily so `--help` answers instantly.

const VERSION = readVersion();
const DUPLICATE_SIGNAL_MS = 300;

let agent: MinerAgent | null = null;
let engine: Engine | null = null;
let stopping = false;

async function main(argv: string[]): Promise<void> {
  let opts: CliOptions;
  try {
    opts = parseCliArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`miner-agent: ${err.message}\nRun 'miner-agent --help' for usage.\n`);
    return exit(2);
  }
  if (opts.help) {
    process.stdout.write(HELP + "\n");
    return exit(0);
  }
  if (opts.version) {
    process.stdout.write(VERSION + "\n");
    return exit(0);
  }

  const log = createLogger({ format: opts.logFormat, quiet: opts.quiet });
  installProcessHandlers(log);

  let wallet;
  try {
    wallet = await loadOrCreateWallet(opts.keyFile);
  } catch (err) {
    log.error(err instanceof WalletError ? err.message : `wallet: ${describeError(err)}`);
    return exit(1);
  }
  if (wallet.created) {
    log.notice(`created a new wallet ${wallet.address} (key saved to ${wallet.keyFile}; keep it private)`, {
      address: wallet.address,
      key_file: wallet.keyFile,
    });
  }
  if (wallet.insecureMode) {
    log.warn(`key file ${wallet.keyFile} is readable by other users (mode ${wallet.insecureMode}); run chmod 600 on it`);
  }

  const model = opts.model ?? (await import("./model/build.ts")).BUILTIN_MODEL_ID;
  const cacheDir = expandHome(opts.cacheDir);
  const dishonest = opts.testDishonest ? await prepareDishonesty(opts.testDishonest, model, cacheDir, log) : undefined;
  log.info(`loading model ${model} (device ${opts.device}, cache ${cacheDir})`);
  const reporter = createLoadReporter({ log, model, tty: Boolean(process.stderr.isTTY) && !opts.quiet });
  const loadStart = Date.now();
  let loaded: Engine;
  try {
    const { loadEngine }: { loadEngine: (o: LoadEngineOptions) => Promise<Engine> } = await import("./engine.ts");
    loaded = await loadEngine({
      model: dishonest?.loadModel ?? model,
      device: opts.device,
      cacheDir,
      threads: opts.threads,
      onProgress: (p) => reporter.onProgress(p),
    });
    if (dishonest?.loadModel) loaded = dishonest.disguise(loaded, model);
  } catch (err) {
    reporter.finish();
    log.error(`cannot load model ${model}: ${describeError(err)}`);
    return exit(1);
  }
  reporter.finish();
  engine = loaded;
  if (stopping) return; // Ctrl-C arrived while loading; the signal handler is exiting

  log.event("engine_loaded", `model ${loaded.model} loaded in ${Date.now() - loadStart} ms`, {
    model: loaded.model,
    device: loaded.device,
    load_ms: Date.now() - loadStart,
  });
  log.info(`miner-agent ${VERSION}`);
  log.info(`address      ${wallet.address}`, { address: wallet.address });
  log.info(`router       ${opts.router}`, { router: opts.router });
  log.info(`model        ${loaded.model}`, { model: loaded.model });
  log.info(`device       ${loaded.device}${opts.device === "auto" ? " (auto)" : ""}`, { device: loaded.device });
  log.info(`concurrency  ${opts.concurrency}`, { concurrency: opts.concurrency });

  agent = new MinerAgent({
    routerUrl: opts.router,
    engine: loaded,
    wallet,
    concurrency: opts.concurrency,
    drainMs: opts.drainMs,
    log,
    name: opts.name,
    stake: opts.stake,
    version: VERSION,
    dishonest: dishonest?.dishonesty,
    testDelayMs: opts.testDelayMs,
    validator: opts.embeddingModel
      ? new Validator({ model: opts.embeddingModel, cacheDir, device: loaded.device, threads: opts.threads, log })
      : undefined,
  });
  if (opts.testDelayMs) log.warn(`TEST-ONLY: every precommit is held ${opts.testDelayMs} ms (slow miner)`);
  try {
    await agent.start();
  } catch (err) {
    if (stopping) return;
    log.error(`registration failed: ${describeError(err)}`);
    await disposeEngine(log);
    return exit(1);
  }
}

/** TEST ONLY (`--test-dishonest`): the cheat hooks, and for wrong-model the look-alike model to load instead. */
async function prepareDishonesty(mode: DishonestMode, model: string, cacheDir: string, log: Logger) {
  const { createDishonesty, disguiseEngine, WRONG_MODEL_VARIANT_ID, WRONG_MODEL_SEED_OFFSET } = await import("./dishonest.ts");
  log.warn(`TEST-ONLY DISHONEST MODE: ${mode} (this miner cheats on purpose; never use outside tests)`, { dishonest: mode });
  let loadModel: string | undefined;
  if (mode === "wrong-model") {
    const build = await import("./model/build.ts");
    if (model !== build.BUILTIN_MODEL_ID) throw new Error("--test-dishonest wrong-model needs the builtin model");
    loadModel = await build.ensureBuiltinModel(cacheDir, WRONG_MODEL_VARIANT_ID, undefined, {
      seed: build.BUILTIN_SEED + WRONG_MODEL_SEED_OFFSET,
    });
  }
  return { dishonesty: createDishonesty(mode), loadModel, disguise: disguiseEngine };
}

function installProcessHandlers(log: Logger): void {
  let firstAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (firstAt) {
      // `npx`/`npm exec` forwards the terminal's SIGINT to us, which the terminal also delivers directly:
      // one Ctrl-C arrives twice within milliseconds. Only a later one is a second Ctrl-C.
      if (Date.now() - firstAt < DUPLICATE_SIGNAL_MS) return;
      log.warn(`${sig} again: exiting immediately`);
      process.exit(130);
    }
    firstAt = Date.now();
    stopping = true;
    log.notice(`${sig} received; stopping (press Ctrl-C again to exit immediately)`);
    void gracefulStop(log, sig);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("unhandledRejection", (err) => log.error(`unhandled rejection: ${describeError(err)}`));
  process.on("uncaughtException", (err) => {
    log.error(`fatal: ${err.stack ?? describeError(err)}`);
    process.exit(1);
  });
}

async function gracefulStop(log: Logger, signal: string): Promise<void> {
  try {
    if (agent) await agent.shutdown();
    await disposeEngine(log);
  } catch (err) {
    log.error(`error while stopping: ${describeError(err)}`);
  }
  log.event("shutdown", "stopped", { signal }, "notice");
  exit(0);
}

async function disposeEngine(log: Logger): Promise<void> {
  if (!engine) return;
  const e = engine;
  engine = null;
  // A wedged native session must not keep the process from exiting.
  await Promise.race([
    e.dispose().catch((err: unknown) => log.warn(`engine dispose failed: ${describeError(err)}`)),
    new Promise((r) => setTimeout(r, 3_000).unref()),
  ]);
}

/** Exits once stdout has taken what was written (pipes are asynchronous on some platforms). */
function exit(code: number): void {
  const done = () => process.exit(code);
  setTimeout(done, 500).unref();
  process.stdout.write("", done);
}

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string };
    return pkg.version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`miner-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
