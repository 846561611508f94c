import { readFileSync } from "node:fs";
import { MinerAgent } from "./agent.ts";
import { withConfigFile } from "./config-file.ts";
import type { Engine, LoadEngineOptions } from "./engine-types.ts";
import { createLogger, describeError, type Logger } from "./log.ts";
import { type CliOptions, HELP, parseCliArgs, UsageError } from "./options.ts";
import { createLoadReporter } from "./progress.ts";
import { measureSpeed } from "./speed.ts";
import { clearLiveLine, printStatus, startStatusReporter } from "./status.ts";
import { Validator } from "./validator.ts";
import { expandHome, loadOrCreateWallet, type Wallet, WalletError } from "./wallet.ts";

// `miner-agent`: parse options, load the wallet and the model, then run the agent until Ctrl-C.
// The engine and the model builder are imported lazily so `--help` answers instantly; dishonest.ts (test-only
// cheating and slow miners) only when its options are given.

const VERSION = readVersion();
const DUPLICATE_SIGNAL_MS = 300;

let agent: MinerAgent | null = null;
let engine: Engine | null = null;
let stopping = false;
let status: ReturnType<typeof startStatusReporter> | null = null;

async function main(argv: string[]): Promise<void> {
  // `doctor` and `status` take the same options (and config file) as a run; they start nothing.
  const command = argv[0] === "doctor" || argv[0] === "status" ? argv[0] : "run";
  const opts = parseOrAnswer(command === "run" ? argv : argv.slice(1));
  if (!opts) return;
  if (command !== "run") return exit(await runCommand(command, opts));
  // A log line first clears the live status line (status.ts), which shares the terminal.
  const log = createLogger({
    format: opts.logFormat,
    quiet: opts.quiet,
    write: (line) => {
      clearLiveLine();
      process.stdout.write(line + "\n");
    },
  });
  installProcessHandlers(log);

  const wallet = await openWallet(opts.keyFile, log);
  if (!wallet) return exit(1);
  const model = opts.model ?? (await import("./model/build.ts")).BUILTIN_MODEL_ID;
  const cacheDir = expandHome(opts.cacheDir);
  // TEST ONLY (`--test-dishonest`, `--test-delay-ms`): a cheating or slow miner. Never loaded otherwise.
  const testMiner =
    opts.testDishonest || opts.testDelayMs
      ? await (await import("./dishonest.ts")).prepareTestMiner({
          mode: opts.testDishonest,
          delayMs: opts.testDelayMs,
          routerUrl: opts.router,
          model,
          cacheDir,
          log,
        })
      : undefined;
  const load = await loadModel(opts, model, cacheDir, testMiner?.loadModel, log);
  if (!load) return exit(1);
  const loaded = testMiner ? testMiner.engine(load.engine) : load.engine;
  engine = loaded;
  if (stopping) return; // Ctrl-C arrived while loading; the signal handler is exiting
  logStartup(opts, log, wallet.address, loaded, load.startedAt);
  const tokensPerS = await declaredSpeed(opts, loaded, log);

  // TEST ONLY: lying-validator answers validation work through its cheat.
  const wrapValidator = (v: Validator) => testMiner?.validator(v) ?? v;
  agent = new MinerAgent({
    routerUrl: opts.router,
    engine: loaded,
    wallet,
    concurrency: opts.concurrency,
    drainMs: opts.drainMs,
    log,
    name: opts.name,
    stake: opts.stake,
    tokensPerS,
    version: VERSION,
    createRunner: testMiner?.createRunner,
    validator: opts.embeddingModel
      ? wrapValidator(new Validator({ model: opts.embeddingModel, cacheDir, device: loaded.device, threads: opts.threads, log }))
      : undefined,
  });
  if (opts.testDelayMs) log.warn(`TEST-ONLY: every precommit is held ${opts.testDelayMs} ms (slow miner)`);
  try {
    // On a router with a chain the stake goes into the staking contract first (stake.ts); without one it is declared.
    if (opts.stake > 0) {
      const { ensureStake } = await import("./stake.ts");
      const onChain = await ensureStake({
        routerUrl: opts.router,
        account: wallet.account,
        target: BigInt(opts.stake),
        rpcUrl: opts.chainRpc,
        log,
      });
      if (onChain === null) log.info(`the router has no chain: stake ${opts.stake} is declared, not staked`);
    }
    await agent.start();
    status = startStatusReporter({
      agent,
      file: expandHome(opts.statusFile),
      version: VERSION,
      router: opts.router,
      address: wallet.address,
      model: loaded.model,
      device: loaded.device,
      apiKey: opts.apiKey,
      log,
      liveLine: Boolean(process.stderr.isTTY) && opts.logFormat === "text" && !opts.quiet,
    });
  } catch (err) {
    if (stopping) return;
    log.error(`registration failed: ${describeError(err)}`);
    await disposeEngine(log);
    return exit(1);
  }
}

/** The options to run with; undefined once a usage error, --help or --version has been answered. */
function parseOrAnswer(argv: string[]): CliOptions | undefined {
  let opts: CliOptions;
  try {
    opts = parseCliArgs(withConfigFile(argv).argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`miner-agent: ${err.message}\nRun 'miner-agent --help' for usage.\n`);
    exit(2);
    return undefined;
  }
  if (opts.help || opts.version) {
    process.stdout.write((opts.help ? HELP : VERSION) + "\n");
    exit(0);
    return undefined;
  }
  return opts;
}

async function runCommand(command: "doctor" | "status", opts: CliOptions): Promise<number> {
  const out = (line: string) => void process.stdout.write(line + "\n");
  if (command === "status") return printStatus(expandHome(opts.statusFile), opts.logFormat === "json", out);
  return (await import("./doctor.ts")).runDoctor(opts, out);
}

async function openWallet(keyFile: string, log: Logger): Promise<Wallet | undefined> {
  let wallet: Wallet;
  try {
    wallet = await loadOrCreateWallet(keyFile);
  } catch (err) {
    log.error(err instanceof WalletError ? err.message : `wallet: ${describeError(err)}`);
    return undefined;
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
  return wallet;
}

/** Loads the engine (`loadFrom`: another folder to load in its place); undefined if it cannot be loaded. */
async function loadModel(
  opts: CliOptions,
  model: string,
  cacheDir: string,
  loadFrom: string | undefined,
  log: Logger,
): Promise<{ engine: Engine; startedAt: number } | undefined> {
  log.info(`loading model ${model} (device ${opts.device}, cache ${cacheDir})`);
  const reporter = createLoadReporter({ log, model, tty: Boolean(process.stderr.isTTY) && !opts.quiet });
  const startedAt = Date.now();
  try {
    const { loadEngine }: { loadEngine: (o: LoadEngineOptions) => Promise<Engine> } = await import("./engine.ts");
    const loaded = await loadEngine({
      model: loadFrom ?? model,
      device: opts.device,
      cacheDir,
      threads: opts.threads,
      onProgress: (p) => reporter.onProgress(p),
    });
    reporter.finish();
    return { engine: loaded, startedAt };
  } catch (err) {
    reporter.finish();
    log.error(`cannot load model ${model}: ${describeError(err)}`);
    return undefined;
  }
}

function logStartup(opts: CliOptions, log: Logger, address: string, loaded: Engine, loadStart: number): void {
  log.event("engine_loaded", `model ${loaded.model} loaded in ${Date.now() - loadStart} ms`, {
    model: loaded.model,
    device: loaded.device,
    load_ms: Date.now() - loadStart,
  });
  log.info(`miner-agent ${VERSION}`);
  log.info(`address      ${address}`, { address });
  log.info(`router       ${opts.router}`, { router: opts.router });
  log.info(`model        ${loaded.model}`, { model: loaded.model });
  log.info(`device       ${loaded.device}${opts.device === "auto" ? " (auto)" : ""}`, { device: loaded.device });
  log.info(`concurrency  ${opts.concurrency}`, { concurrency: opts.concurrency });
}

/** The speed declared at registration: `--tokens-per-s`, else measured now (undefined: the router's default allowance). */
async function declaredSpeed(opts: CliOptions, loaded: Engine, log: Logger): Promise<number | undefined> {
  if (opts.tokensPerS !== undefined) return opts.tokensPerS;
  const speed = await measureSpeed(loaded, opts.concurrency).catch((err: unknown) => {
    log.warn(`could not measure decode speed (${describeError(err)}); declaring none`);
    return undefined;
  });
  if (speed !== undefined) log.info(`speed        ${speed} tokens/s per task (declared)`, { tokens_per_s: speed });
  return speed;
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
    status?.stop("stopping");
    if (agent) await agent.shutdown();
    await disposeEngine(log);
    status?.stop();
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
