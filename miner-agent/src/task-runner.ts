import type { PrivateKeyAccount } from "viem/accounts";
import type { AssignMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitDigest, precommitTypedData, resultHash, type SigningDomain } from "../../shared/signing.ts";
import { ContextLengthError, type Engine, type GenerateResult } from "./engine-types.ts";
import { describeError, type Logger } from "./log.ts";
import { PayloadClient, PayloadError } from "./payloads.ts";
import type { Stats } from "./stats.ts";

// Runs assigned tasks: at most `concurrency` at once across all sessions, the rest queued locally in arrival
// order. Per task: ack at once → generate (streaming tokens when asked) → precommit the signed commitment → commit.
// Results are handed to the session's sink, which keeps them until they reach a socket, so a task that
// finishes while its session is reconnecting (router restart) is still delivered.

/** Where a task's messages go: its session channel. */
export interface TaskSink {
  readonly sessionId: string;
  /** Now or never (ack, token): pointless to replay after a reconnect. */
  send(msg: SessionMinerMessage): boolean;
  /** Kept in an outbox until written to a socket, across reconnects (precommit, commit, release). */
  deliver(msg: SessionMinerMessage): void;
  /** Whether some of this task's messages are still waiting in the outbox. */
  hasPending(taskId: string): boolean;
  /** Forget this task's undelivered messages (it was cancelled). */
  dropTask(taskId: string): void;
}

/**
 * Names the miner in each precommit and signs it (the miner's wallet account). With `sign` (a local key) the
 * digest is signed directly (shared/signing.ts `precommitDigest`: the same signature, less hashing).
 */
export type PrecommitSigner = Pick<PrivateKeyAccount, "address" | "signTypedData"> & Partial<Pick<PrivateKeyAccount, "sign">>;

type AbortCause = "cancel" | "session" | "shutdown";

interface Task {
  key: string;
  assign: AssignMessage;
  sink: TaskSink;
  state: "queued" | "running";
  controller: AbortController;
  abortCause?: AbortCause;
  arrivedAt: number;
  /** performance.now() at arrival, for sub-millisecond first-token timing. */
  arrivedPerf: number;
  /** Streamed tokens sent so far (the next token's seq). */
  tokensSent: number;
  /** performance.now() when the first streamed token was sent. */
  firstTokenPerf?: number;
  /** It could not start on arrival (all slots busy), so its deadline may have passed meanwhile. */
  waited: boolean;
  /** BENCH ONLY (MINER_BENCH_TRACE=1): performance.now() around signing and at delivery, for bench/router.ts. */
  trace?: { signStart: number; signEnd: number; delivered: number };
}

/** BENCH ONLY: task_done carries this miner's per-stage timestamps (bench/router.ts's breakdown). */
const BENCH_TRACE = process.env.MINER_BENCH_TRACE === "1";

type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

export interface TaskRunnerOptions {
  /** What computes each result. */
  engine: Pick<Engine, "model" | "generate">;
  /** Who precommits: its address is named in the signed precommit, and it signs it. */
  account: PrecommitSigner;
  /** The signing domain of the router we registered with (shared/signing.ts): precommits are signed for it. */
  domain: () => SigningDomain;
  concurrency: number;
  log: Logger;
  stats: Stats;
  /** How many finished results to remember, to answer an assign the router re-sends after losing our commit. */
  finishedCacheSize?: number;
  /** Off-chain / private payloads (v2/v3 tasks): prompt fetch, task keys, signed result writes. */
  payloads?: PayloadClient;
}

/** The runner as the agent and its session channels use it: a TaskRunner, or something put in front of one. */
export type TaskRunnerApi = Pick<
  TaskRunner,
  "running" | "queued" | "inflight" | "submit" | "cancel" | "abortSession" | "stopAccepting" | "releaseRunning"
>;

const MAX_REASON = 500;

export class TaskRunner {
  readonly #opts: TaskRunnerOptions;
  readonly #tasks = new Map<string, Task>();
  readonly #queue: Task[] = [];
  readonly #finished = new Map<string, { precommit: Precommit; commit: Commit }>();
  #running = 0;
  #accepting = true;

  constructor(opts: TaskRunnerOptions) {
    this.#opts = opts;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Tasks accepted and not finished (running + queued locally): the heartbeat's `inflight`. */
  get inflight(): number {
    return this.#tasks.size;
  }

  /** Answers an assign and, when it is a new task, runs it as soon as a slot is free. */
  submit(sink: TaskSink, assign: AssignMessage): void {
    if (this.admit(sink, assign)) this.#enqueue(sink, assign);
  }

  /**
   * The first half of `submit`: answers an assign without running anything. Returns true when it acked a new
   * task (which `submit` then queues); false when it released it (shutting down, another model) or re-answered
   * an assign the router repeated.
   */
  admit(sink: TaskSink, assign: AssignMessage): boolean {
    const { log, engine } = this.#opts;
    const tid = assign.task_id;
    const key = taskKey(sink.sessionId, tid);
    const label = `task ${key}`;

    if (!this.#accepting) {
      sink.deliver({ type: "release", task_id: tid, reason: "shutdown" });
      log.event("task_released", `${label} released (shutting down)`, fields(sink, tid, { reason: "shutdown" }));
      return false;
    }
    // Re-sent after a reconnect: never run a task twice. Re-ack; a running one will deliver when done…
    if (this.#tasks.has(key)) {
      sink.send({ type: "ack", task_id: tid });
      log.info(`${label}: assign repeated while ${this.#tasks.get(key)!.state}; re-acked`);
      return false;
    }
    // …and a finished one re-delivers its result, unless that is still waiting in the outbox anyway.
    const done = this.#finished.get(key);
    if (done) {
      sink.send({ type: "ack", task_id: tid });
      if (!sink.hasPending(tid)) {
        sink.deliver(done.precommit);
        sink.deliver(done.commit);
      }
      log.info(`${label}: assign repeated after completion; result re-sent`);
      return false;
    }
    // Answering with another model's output would only fail consensus; hand it back so it is reassigned.
    if (assign.model !== engine.model) {
      const reason = `model mismatch: assigned ${assign.model}, this miner serves ${engine.model}`;
      sink.deliver({ type: "release", task_id: tid, reason: reason.slice(0, MAX_REASON) });
      log.event("task_released", `${label} released: ${reason}`, fields(sink, tid, { reason }), "warn");
      return false;
    }

    sink.send({ type: "ack", task_id: tid });
    return true;
  }

  #enqueue(sink: TaskSink, assign: AssignMessage): void {
    const task: Task = {
      key: taskKey(sink.sessionId, assign.task_id),
      assign,
      sink,
      state: "queued",
      controller: new AbortController(),
      arrivedAt: Date.now(),
      arrivedPerf: performance.now(),
      tokensSent: 0,
      waited: this.#running >= this.#opts.concurrency || this.#queue.length > 0,
    };
    this.#tasks.set(task.key, task);
    this.#queue.push(task);
    this.#pump();
  }

  /** The router withdrew the task: stop it and send nothing more about it. */
  cancel(sessionId: string, taskId: string, reason: string): void {
    const key = taskKey(sessionId, taskId);
    const task = this.#tasks.get(key);
    const f = { session_id: sessionId, task_id: taskId, reason };
    if (task) {
      this.#abort(task, "cancel");
      this.#opts.log.event("task_cancelled", `task ${key} cancelled (${reason})`, f);
      return;
    }
    if (this.#finished.delete(key)) {
      this.#opts.log.event("task_cancelled", `task ${key} cancelled after completion (${reason})`, f);
    }
  }

  /** We left the session: its tasks can no longer be delivered, so stop them silently. */
  abortSession(sessionId: string): void {
    for (const task of [...this.#tasks.values()]) {
      if (task.sink.sessionId === sessionId) this.#abort(task, "session");
    }
  }

  /** Shutdown, step 1: refuse new assigns and hand back everything not yet started. */
  stopAccepting(): void {
    this.#accepting = false;
    for (const task of [...this.#queue]) this.#releaseForShutdown(task);
  }

  /** Shutdown, step 2 (drain time is up): stop what is still running and hand it back. */
  releaseRunning(): void {
    for (const task of [...this.#tasks.values()]) this.#releaseForShutdown(task);
  }

  #releaseForShutdown(task: Task): void {
    const tid = task.assign.task_id;
    this.#abort(task, "shutdown");
    task.sink.deliver({ type: "release", task_id: tid, reason: "shutdown" });
    this.#opts.log.event("task_released", `task ${task.key} released (shutdown)`, fields(task.sink, tid, { reason: "shutdown" }));
  }

  #abort(task: Task, cause: AbortCause): void {
    task.abortCause ??= cause;
    task.sink.dropTask(task.assign.task_id);
    // Forget it now (a later assign of the same id is a new run); a running one keeps its slot until the
    // engine actually stops.
    if (this.#tasks.get(task.key) === task) this.#tasks.delete(task.key);
    if (task.state === "queued") {
      const i = this.#queue.indexOf(task);
      if (i >= 0) this.#queue.splice(i, 1);
    } else {
      task.controller.abort(new Error(`task ${cause}`));
    }
  }

  #pump(): void {
    while (this.#running < this.#opts.concurrency && this.#queue.length > 0) {
      const task = this.#queue.shift()!;
      // Only tasks that waited here are checked: their deadline is judged on our clock, which may be skewed,
      // and a task started at once is always worth trying.
      if (task.waited && Date.now() > task.assign.commit_deadline) {
        this.#tasks.delete(task.key);
        const reason = "commit deadline passed while queued on the miner";
        task.sink.deliver({ type: "release", task_id: task.assign.task_id, reason });
        this.#opts.log.event(
          "task_released",
          `task ${task.key} released: ${reason}`,
          fields(task.sink, task.assign.task_id, { reason }),
          "warn",
        );
        continue;
      }
      task.state = "running";
      this.#running++;
      void this.#run(task).finally(() => {
        this.#running--;
        if (this.#tasks.get(task.key) === task) this.#tasks.delete(task.key);
        this.#pump();
      });
    }
  }

  /** One task, start to end: input → generate → signed precommit → commit; released if anything fails. */
  async #run(task: Task): Promise<void> {
    const { engine, account } = this.#opts;
    const { assign, sink } = task;
    const startedAt = Date.now();
    try {
      const input = assign.payload?.prompt_urn ? await this.#fetchInput(task) : assign.input;
      if (task.abortCause) return;
      const result = await engine.generate({
        input,
        params: assign.params,
        signal: task.controller.signal,
        onToken: assign.stream ? (text) => this.#sendToken(task, text) : undefined,
      });
      if (task.abortCause) return;
      // The commitment binds this miner: another miner with the same text precommits another hash.
      const hash = commitmentHash({
        session: sink.sessionId,
        task: assign.task_id,
        miner: account.address,
        result: resultHash(result.text),
      });
      const signStart = performance.now();
      const fields = { session: sink.sessionId, task: assign.task_id, miner: account.address, hash };
      const signature = account.sign
        ? await account.sign({ hash: precommitDigest(fields, this.#opts.domain()) })
        : await account.signTypedData(precommitTypedData(fields, this.#opts.domain()));
      if (task.abortCause) return;
      const signEnd = performance.now();
      if (!(await this.#deliverResult(task, result, { type: "precommit", task_id: assign.task_id, hash, signature }))) return;
      if (BENCH_TRACE) task.trace = { signStart, signEnd, delivered: performance.now() };
      this.#logDone(task, result, hash, startedAt);
    } catch (err) {
      if (task.abortCause) return; // cancelled, session left, or released for shutdown: already handled
      this.#releaseFailed(task, err, startedAt);
    }
  }

  async #fetchInput(task: Task): Promise<AssignMessage["input"]> {
    if (!this.#opts.payloads) throw new Error("task has an off-chain payload and this miner has no payload client");
    return this.#opts.payloads.input(task.sink.sessionId, task.assign, task.controller.signal);
  }

  #sendToken(task: Task, text: string): void {
    if (!text || task.abortCause) return;
    task.firstTokenPerf ??= performance.now();
    task.sink.send({ type: "token", task_id: task.assign.task_id, seq: task.tokensSent++, text });
  }

  /** Precommit and commit, in that order; false if the task was stopped meanwhile (nothing more is sent). */
  async #deliverResult(task: Task, result: GenerateResult, precommit: Precommit): Promise<boolean> {
    const { assign, sink } = task;
    // Off-chain result (private task, offchain policy, or too large to inline): precommit first, then the
    // signed write, then a commit that names the stored result instead of carrying it.
    let resultUrn: string | undefined;
    if (PayloadClient.offchainResult(assign, result.text)) {
      if (!this.#opts.payloads) throw new Error("task wants an off-chain result and this miner has no payload client");
      sink.deliver(precommit);
      resultUrn = await this.#opts.payloads.writeResult(sink.sessionId, assign, result.text, task.controller.signal);
      if (task.abortCause) return false;
    }
    const first = task.firstTokenPerf;
    // A private verified task's ids go sealed under its key, for allowlisted validators only (verify-round.ts).
    const sealedIds =
      assign.params.verify && result.token_ids && assign.payload?.encrypted && this.#opts.payloads
        ? await this.#opts.payloads.sealTokenIds(sink.sessionId, assign, result.token_ids, task.controller.signal)
        : undefined;
    if (task.abortCause) return false;
    const commit: Commit = {
      type: "commit",
      task_id: assign.task_id,
      text: resultUrn ? "" : result.text,
      ...(resultUrn ? { result_urn: resultUrn } : {}),
      finish_reason: result.finish_reason,
      usage: result.usage,
      inference_ms: Math.max(0, result.inference_ms),
      // Lets the router report its own share of time-to-first-token.
      ...(first !== undefined ? { first_token_ms: Math.max(0, first - task.arrivedPerf) } : {}),
      // Verified tasks: validators re-score these (a private task's ids would reveal its text: never sent).
      ...(assign.params.verify && result.token_ids && !assign.payload?.encrypted ? { token_ids: result.token_ids } : {}),
      ...(sealedIds ? { token_ids_sealed: sealedIds } : {}),
    };
    if (!resultUrn) sink.deliver(precommit);
    sink.deliver(commit);
    this.#remember(task.key, precommit, commit);
    return true;
  }

  #logDone(task: Task, result: GenerateResult, hash: string, startedAt: number): void {
    const ms = Date.now() - startedAt;
    const tokens = result.usage.completion_tokens;
    const tps = ms > 0 ? tokens / (ms / 1000) : 0;
    this.#opts.stats.recordTask(tokens, result.inference_ms);
    this.#opts.log.event(
      "task_done",
      `task ${task.key} done in ${ms} ms, ${tokens} tokens (${tps.toFixed(1)} tok/s), finish=${result.finish_reason}`,
      fields(task.sink, task.assign.task_id, {
        ms,
        tokens,
        tokens_per_s: Math.round(tps * 10) / 10,
        finish_reason: result.finish_reason,
        inference_ms: result.inference_ms,
        queue_ms: startedAt - task.arrivedAt,
        prompt_tokens: result.usage.prompt_tokens,
        streamed: task.assign.stream,
        hash,
        ...(task.trace ? { trace: benchTrace(task) } : {}),
      }),
    );
  }

  #releaseFailed(task: Task, err: unknown, startedAt: number): void {
    const { log } = this.#opts;
    const { sink } = task;
    const tid = task.assign.task_id;
    const msg = describeError(err);
    if (err instanceof PayloadError && err.status === 403) {
      log.event(
        "payload_refused",
        `task ${task.key}: the router refused this miner a payload or key: ${msg}`,
        fields(sink, tid, { status: err.status, code: err.code }),
        "warn",
      );
    }
    const reason = `${err instanceof PayloadError ? "payload error" : "engine error"}: ${msg}`.slice(0, MAX_REASON);
    // Said as such, so the session fails the task once every miner has refused it, instead of waiting it out.
    const code = err instanceof ContextLengthError ? ({ code: err.code } as const) : {};
    sink.deliver({ type: "release", task_id: tid, reason, ...code });
    log.event(
      "task_released",
      `task ${task.key} failed after ${Date.now() - startedAt} ms: ${msg}; released`,
      fields(sink, tid, { reason }),
      "warn",
    );
  }

  #remember(key: string, precommit: Precommit, commit: Commit): void {
    this.#finished.set(key, { precommit, commit });
    const max = this.#opts.finishedCacheSize ?? 64;
    while (this.#finished.size > max) this.#finished.delete(this.#finished.keys().next().value!);
  }
}

/** BENCH ONLY: the task's timestamps as epoch ms with sub-ms precision (one clock with the bench's). */
function benchTrace(task: Task): Record<string, number> {
  const epoch = (perf: number) => performance.timeOrigin + perf;
  const t = task.trace!;
  return { arrived: epoch(task.arrivedPerf), sign_start: epoch(t.signStart), sign_end: epoch(t.signEnd), delivered: epoch(t.delivered) };
}

function taskKey(sessionId: string, taskId: string): string {
  return `${sessionId}/${taskId}`;
}

function fields(sink: TaskSink, taskId: string, extra: Record<string, unknown>): Record<string, unknown> {
  return { session_id: sink.sessionId, task_id: taskId, ...extra };
}
