import { signingDomain } from "../../shared/signing.ts";
import { sleep } from "./backoff.ts";
import type { Engine } from "./engine-types.ts";
import type { Logger } from "./log.ts";
import { PayloadClient } from "./payloads.ts";
import { PoolConnection, type SessionRef } from "./pool-connection.ts";
import { Registration } from "./registration.ts";
import { RouterClient } from "./router-client.ts";
import { SessionConnection } from "./session-connection.ts";
import { Stats } from "./stats.ts";
import { TaskRunner, type TaskRunnerApi, type TaskRunnerOptions } from "./task-runner.ts";
import type { ValidatorApi } from "./validator.ts";
import { type VerifyHandler, verifierFor } from "./verifier.ts";
import type { Wallet } from "./wallet.ts";

// Wires one running miner together: registration → pool channel → one session channel per session the pool
// lists → task runner. Knows nothing about argv or signals (cli.ts does), so tests can drive it directly.

export interface MinerAgentOptions {
  routerUrl: string;
  engine: Engine;
  wallet: Pick<Wallet, "address" | "account">;
  concurrency: number;
  drainMs: number;
  log: Logger;
  name?: string;
  /** Tokens declared at stake when registering. */
  stake?: number;
  /** Decode speed declared when registering, tokens/s per task at full concurrency (cli.ts measures it). */
  tokensPerS?: number;
  version?: string;
  fetch?: typeof fetch;
  /** Validation work (embeddings for similarity consensus); its model is announced with the engine's. */
  validator?: ValidatorApi;
  /**
   * Builds the task runner from its options; default `new TaskRunner(opts)`. Only the test-only cheating and
   * slow miners (dishonest.ts, wired by cli.ts) put a decorator here.
   */
  createRunner?: (opts: TaskRunnerOptions) => TaskRunnerApi;
}

export class MinerAgent {
  readonly #opts: MinerAgentOptions;
  readonly #client: RouterClient;
  readonly #stats = new Stats();
  readonly #runner: TaskRunnerApi;
  readonly #sessions = new Map<string, SessionConnection>();
  #registration: Registration | null = null;
  #pool: PoolConnection | null = null;
  #stopping: Promise<void> | null = null;
  readonly #verify: VerifyHandler | undefined;

  constructor(opts: MinerAgentOptions) {
    this.#opts = opts;
    this.#client = new RouterClient(opts.routerUrl, opts.fetch);
    const createRunner = opts.createRunner ?? ((o: TaskRunnerOptions) => new TaskRunner(o));
    // Signatures are for the deployment we registered with (its challenge named it); tasks only come after that.
    const domain = () => {
      const router = this.#registration?.current?.router;
      if (!router) throw new Error("not registered yet: no router to sign for");
      return signingDomain(router);
    };
    // Tokens come from the registration once start() made it; payload calls only happen after that.
    const payloads = new PayloadClient({
      baseUrl: this.#client.baseUrl,
      account: opts.wallet.account,
      domain,
      fetch: opts.fetch,
      tokens: {
        token: () => (this.#registration ? this.#registration.token() : Promise.reject(new Error("not registered yet"))),
        invalidate: (t) => this.#registration?.invalidate(t),
      },
    });
    this.#runner = createRunner({
      engine: opts.engine,
      account: opts.wallet.account,
      domain,
      concurrency: opts.concurrency,
      log: opts.log,
      stats: this.#stats,
      payloads,
    });
    // Verified sampling: this miner re-scores other replicas' outputs with its own model (verifier.ts).
    this.#verify = verifierFor(opts.engine, payloads, opts.log);
  }

  get runner(): TaskRunnerApi {
    return this.#runner;
  }

  get sessionIds(): string[] {
    return [...this.#sessions.keys()];
  }

  /** Work counters (tasks done, decode speed) for the status line and the status file (status.ts). */
  get stats(): Stats {
    return this.#stats;
  }

  /**
   * Registers (retrying while the router is unreachable) and opens the pool channel. Resolves once registered;
   * `ready` is logged when the pool confirms. Rejects on a registration error retrying cannot fix.
   */
  async start(): Promise<void> {
    const { engine, wallet, log, concurrency } = this.#opts;
    let first = true;
    const registration = new Registration({
      client: this.#client,
      account: wallet.account,
      info: {
        models: this.#opts.validator ? [engine.model, this.#opts.validator.model] : [engine.model],
        device: engine.device,
        capacity: concurrency,
        name: this.#opts.name,
        stake: this.#opts.stake,
        version: this.#opts.version,
        ...(this.#opts.tokensPerS ? { tokens_per_s: this.#opts.tokensPerS } : {}),
        // The model's context, so the router refuses prompts that cannot fit before anyone runs them.
        ...(engine.context ? { contexts: [{ model: engine.model, ...engine.context }] } : {}),
      },
      log,
      onRegistered: (res) => {
        log.info(first ? `registered with ${this.#client.baseUrl}` : "registered again (new token)", {
          expires_at: res.expires_at,
          heartbeat_ms: res.heartbeat_ms,
        });
        first = false;
      },
    });
    this.#registration = registration;
    const reg = await registration.start();
    if (this.#stopping) return;

    this.#pool = new PoolConnection({
      url: this.#client.wsUrl("/api/v1/miners/connect"),
      address: wallet.address,
      tokens: registration,
      log,
      stats: this.#stats,
      inflight: () => this.#runner.inflight,
      heartbeatMs: reg.heartbeat_ms,
      onRegistered: ({ reconnect, block, heartbeat_ms }) => {
        if (reconnect) {
          log.info("pool channel reconnected");
          return;
        }
        log.event("ready", `ready: serving ${engine.model} on ${engine.device}, up to ${concurrency} task(s) at once`, {
          address: wallet.address,
          router: this.#client.baseUrl,
          model: engine.model,
          device: engine.device,
          concurrency,
          block,
          heartbeat_ms,
        });
      },
      onSessions: (list) => this.#onSessions(list),
      onUnauthorized: () => {
        const token = registration.current?.token;
        if (token) registration.invalidate(token);
      },
    });
    this.#pool.start();
  }

  /** The pool's list is authoritative: join what is new, leave what is gone. */
  #onSessions(list: SessionRef[]): void {
    if (this.#stopping) return; // draining: neither join nor abandon anything
    const { log, engine, wallet } = this.#opts;
    const wanted = new Map(list.map((s) => [s.session_id, s]));
    for (const [sid, conn] of this.#sessions) {
      if (wanted.has(sid)) continue;
      this.#sessions.delete(sid);
      this.#runner.abortSession(sid);
      void conn.close();
      log.event("session_left", `left session ${sid} (no longer assigned by the pool)`, { session_id: sid });
    }
    for (const s of wanted.values()) {
      if (this.#sessions.has(s.session_id)) continue;
      const conn = new SessionConnection({
        sessionId: s.session_id,
        model: s.model,
        url: this.#client.wsUrl(`/api/v1/sessions/${encodeURIComponent(s.session_id)}/connect`),
        address: wallet.address,
        engineModel: engine.model,
        tokens: this.#registration!,
        runner: this.#runner,
        validator: this.#opts.validator,
        verify: this.#verify,
        log,
      });
      this.#sessions.set(s.session_id, conn);
      conn.start();
    }
  }

  /**
   * Graceful stop: refuse new work and hand back what has not started; give running tasks up to `drainMs` to
   * finish and be delivered; release what is left ("shutdown"); close every socket with 1000.
   */
  shutdown(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    const { log, drainMs } = this.#opts;
    const runner = this.#runner;
    const busy = runner.running;
    log.notice(busy > 0 ? `shutting down: waiting up to ${drainMs} ms for ${busy} running task(s)` : "shutting down", {
      running: busy,
      queued: runner.queued,
      drain_ms: drainMs,
    });
    runner.stopAccepting(); // queued tasks are handed back at once: they would not finish within the drain
    const pending = (connectedOnly = false) =>
      [...this.#sessions.values()].reduce((n, s) => n + (!connectedOnly || s.connected ? s.pending : 0), 0);
    const deadline = Date.now() + drainMs;
    while ((runner.inflight > 0 || pending() > 0) && Date.now() < deadline) await sleep(25);
    if (runner.inflight > 0) {
      runner.releaseRunning();
      // Let the releases reach the sockets before closing them.
      const flushBy = Date.now() + 1_000;
      while (pending(true) > 0 && Date.now() < flushBy) await sleep(10);
    }
    if (pending() > 0) log.warn(`shutting down with ${pending()} undelivered message(s) (session disconnected)`);

    this.#registration?.stop();
    await Promise.all([...[...this.#sessions.values()].map((s) => s.close("miner shutting down")), this.#pool?.close()]);
    this.#sessions.clear();
  }
}
