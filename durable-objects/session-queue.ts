import { DurableObject } from "cloudflare:workers";
import type { Hex } from "viem";
import type { Failure } from "../shared/errors.ts";
import type { PayloadDescriptor } from "../shared/payloads.ts";
import { MAX_MINER_FRAME_CHARS, parseMessage, SessionMinerMessage, type SessionServerMessage } from "../shared/protocol.ts";
import type { SigningDomain } from "../shared/signing.ts";
import { canTransition, type ReplicaState, replicaIsLive } from "../shared/task-state.ts";
import type { ConsensusView, DepositRecord, SessionConfig, SessionUsage, TaskView } from "../shared/views.ts";
import { deploymentDomain } from "./deployment.ts";
import { type MinerSocket, MinerSockets } from "./miner-sockets.ts";
import { BlockClock } from "./oracle.ts";
import { OutcomeReporter } from "./outcome-reporter.ts";
import { poolFor } from "./pool-shards.ts";
import { admissionFailure, ownerFailure } from "./session-queue/admission.ts";
import { AuditGate } from "./session-queue/audit-gate.ts";
import { barrierOpen, holdCommit, isHeld, revealHeld } from "./session-queue/barrier.ts";
import { type CancelBill, cancelBill } from "./session-queue/cancel.ts";
import { MinerChannels } from "./session-queue/channels.ts";
import { withDefaults, withDeposit } from "./session-queue/config.ts";
import { refusedByEveryone } from "./session-queue/context.ts";
import { nextDeadline } from "./session-queue/deadlines.ts";
import { EmbeddingJobs, type EmbedOutcome, type EmbedRequest } from "./session-queue/embedding-jobs.ts";
import { resendAssigns, restoreTasks } from "./session-queue/eviction.ts";
import { type DeadlinePolicy, deadlinePolicy, replicaWindows } from "./session-queue/fair-deadlines.ts";
import { type TaskMessage, unfold } from "./session-queue/folded-commit.ts";
import { claimResultWrite, holdsTask } from "./session-queue/holdings.ts";
import { checkedUsage, textByteCap } from "./session-queue/miner-input.ts";
import { MinerLoad } from "./session-queue/miner-load.ts";
import { OpenTasks } from "./session-queue/open-tasks.ts";
import { replicaOutcomes } from "./session-queue/outcomes.ts";
import type { QueueParts } from "./session-queue/parts.ts";
import { exactVerdict, largestHashGroup, quorumOf, quorumPhase, settleStep } from "./session-queue/quorum.ts";
import { canRecruit, quorumGate } from "./session-queue/quorum-gate.ts";
import { type Access, accessFor, describeFor, type ReadState, type TaskRead, taskFor, tasksFor } from "./session-queue/reads.ts";
import { Retention, retentionMs } from "./session-queue/retention.ts";
import type { SubmitOutcome, SubmitRequest } from "./session-queue/rpc.ts";
import { type SealedOutcome, SealedReservations } from "./session-queue/sealed-reservations.ts";
import { servingFailure } from "./session-queue/serving.ts";
import { canStillFill, SimilarityRounds } from "./session-queue/similarity-round.ts";
import { Stragglers } from "./session-queue/stragglers.ts";
import { extendStream } from "./session-queue/stream-prefix.ts";
import { liveWorkOf, sweepTasks } from "./session-queue/sweep.ts";
import {
  assignMessage,
  clientCutoff,
  countingReplicas,
  liveReplicas,
  newReplica,
  type OpenTask,
  type Replica,
  replicasOf,
} from "./session-queue/task.ts";
import { createTask } from "./session-queue/task-create.ts";
import { TaskStore } from "./session-queue/task-store.ts";
import { VerifyRounds } from "./session-queue/verify-round.ts";
import { Waiters } from "./session-queue/waiters.ts";
import { checkCommit, checkPrecommit } from "./slash-evidence.ts";
import { oracle } from "./stubs.ts";

type MinerMessage<T extends SessionMinerMessage["type"]> = Extract<SessionMinerMessage, { type: T }>;

/** A miner that was connected before an eviction gets this long to reconnect before its tasks move on. */
const RECONNECT_GRACE_MS = 3_000;
const SESSION_NOT_FOUND: Failure = { code: "session_not_found", message: "unknown session" };

/**
 * One session's task queue: its tasks and their lifecycle (SQLite), the WebSockets of its miners (hibernation API)
 * and per-phase deadlines (one alarm at the earliest). Read in the order of one task: submit → pump/assign → the
 * miners' ack, token, precommit, commit → advance → settle → close or fail → finish; then connections and alarms.
 */
export class SessionQueue extends DurableObject<Env> {
  private readonly store: TaskStore;
  private readonly sockets: MinerSockets<SessionServerMessage>;
  /** Task outcomes on their way to the NodePool's ledger, batched. */
  private readonly outcomes: OutcomeReporter;
  private readonly rounds: SimilarityRounds;
  private readonly verifies: VerifyRounds;
  private readonly embeds: EmbeddingJobs;
  private readonly stragglers: Stragglers;
  private readonly channels: MinerChannels;
  private readonly retention: Retention;
  private readonly audits = new AuditGate();
  private readonly sealed = new SealedReservations();
  private config: SessionConfig | null;
  private readonly open: OpenTasks;
  private readonly load: MinerLoad;
  private readonly waiters = new Waiters();
  private usedTokens = 0;
  private readonly clock: BlockClock;
  private alarmAt: number | null = null;
  private readonly wokeAt = Date.now();
  /** The deployment's signing domain: a precommit signed for another router does not verify here. */
  private readonly domain: SigningDomain;
  private readonly deadlines: DeadlinePolicy;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.domain = deploymentDomain(env);
    this.deadlines = deadlinePolicy(env);
    this.store = new TaskStore(ctx.storage.sql);
    const saved = this.store.loadSession();
    this.open = new OpenTasks(saved.lastTaskId);
    this.sockets = new MinerSockets(ctx);
    const pool = () => poolFor(env);
    const waitUntil = (p: Promise<unknown>) => ctx.waitUntil(p);
    this.clock = new BlockClock(() => oracle(env).snapshot(), waitUntil);
    this.load = new MinerLoad(
      (addresses) => pool().reputations(addresses),
      () => this.pump(),
    );
    // The pool answers a report with those miners' new standing: a bench takes effect here at once.
    this.outcomes = new OutcomeReporter(async (batch) => this.load.update(await pool().recordOutcomes(batch)), waitUntil);
    const parts: QueueParts = {
      config: () => this.config!,
      store: this.store,
      sockets: this.sockets,
      load: this.load,
      outcomes: this.outcomes,
      payloads: env.PAYLOADS,
      domain: this.domain,
      block: (at) => this.clock.height(at),
      armAlarm: (at) => this.armAlarm(at),
    };
    this.stragglers = new Stragglers(parts);
    this.retention = new Retention(env.PAYLOADS, retentionMs(env), ctx.storage);
    this.channels = new MinerChannels(parts, this.open, this.stragglers, () => this.config, pool);
    // A replica validators failed stays `committed`, flagged, with its reason: the task is queued and judged again.
    const retry = (task: OpenTask, r: Replica, reason: string) => this.dropReplica(task, r, "committed", reason);
    const verifyHost = { openTask: (id: number) => this.open.get(id), close: this.close.bind(this), retry, fail: this.fail.bind(this) };
    this.verifies = new VerifyRounds(parts, verifyHost, Number(env.VERIFY_TIMEOUT_MS) || undefined);
    this.rounds = new SimilarityRounds(parts, {
      openTask: (id) => this.open.get(id),
      sentText: (taskId) => this.waiters.sent(taskId),
      conclude: (task, chosen, consensus, now) => this.conclude(task, chosen, consensus, now),
    });
    this.embeds = new EmbeddingJobs(parts, ctx.storage.sql, this.open, {
      used: () => this.usedTokens,
      setUsed: (used) => void (this.usedTokens = used),
      unbenched: () => this.unbenched(),
      poolServes: async (model) => (await pool().serving(model)).miners > 0,
    });
    this.config = saved.config ? withDefaults(saved.config, env) : null;
    this.usedTokens = saved.used;
    if (this.config) restoreTasks(this.store, this.config, this.open, this.stragglers, this.load);
    if (this.config) this.embeds.restore();
    ctx.blockConcurrencyWhile(async () => {
      await this.clock.load();
      this.alarmAt = await ctx.storage.getAlarm();
      // Tasks in flight across an eviction: their miners get a moment to reconnect before the work moves on.
      if (this.open.size > 0 || this.stragglers.size > 0 || this.embeds.size > 0) this.armAlarm(Date.now() + RECONNECT_GRACE_MS);
      if (this.config) resendAssigns(this.open, this.sockets, this.config.ack_timeout, this.clock.height(Date.now()));
    });
  }

  // ── RPC: the session ─────────────────────────────────────────────────────────────────────────────────

  async init(config: SessionConfig): Promise<{ ok: true; session: SessionConfig } | { ok: false; error: Failure }> {
    if (this.config) return { ok: false, error: { code: "session_exists", message: `session ${config.id} exists` } };
    this.config = withDefaults(config, this.env);
    this.store.saveConfig(this.config);
    return { ok: true, session: this.config };
  }

  async describe(caller?: string): Promise<{ config: SessionConfig; usage: SessionUsage } | null> {
    return this.config ? describeFor(this.reads(), caller) : null;
  }

  async listTasks(caller: string, limit = 50, before?: number): Promise<TaskView[] | null> {
    return this.config ? tasksFor(this.reads(), caller, limit, before) : null;
  }

  async getTask(taskId: string, caller: string): Promise<TaskRead> {
    return this.config ? taskFor(this.reads(), caller, taskId) : { ok: false, error: SESSION_NOT_FOUND };
  }

  /** The owner ends its open task now, unblamed, charged only for work its miners proved (session-queue/cancel.ts). */
  async cancelTask(taskId: string, owner: string): Promise<TaskRead> {
    const read = await this.getTask(taskId, owner);
    const task = read.ok ? this.open.get(Number(read.task.task_id)) : undefined;
    if (!task) return this.embeds.cancel(read); // an embedding job, or a finished task
    const bill = cancelBill(task, this.waiters.sent(task.id), this.stamp(Date.now()));
    this.usedTokens = this.store.chargeTask(task.id, bill.charged, this.usedTokens); // written, then counted
    this.fail(task, "task_cancelled", bill.message, Date.now(), false, bill.paid);
    return { ok: true, task: this.view(task.id) };
  }

  /** Whether `caller` may use this session and, given `taskId`, see that task (payloads, keys, allowlists, audits). */
  async access(caller: string, taskId?: string): Promise<Access> {
    return this.config ? accessFor(this.reads(), caller, taskId) : { ok: false, error: SESSION_NOT_FOUND };
  }

  /** Adds a paid deposit (workers/lib/deposits.ts checked the payment) to the session's LLM tokens; null: no session. */
  async addDeposit(entry: DepositRecord): Promise<SessionConfig | null> {
    return this.config ? this.store.updateConfig((this.config = withDeposit(this.config, entry))) : null;
  }

  /**
   * Reserves the next task id, so the router can store (and encrypt under the task key) a task's payload
   * before submitting it with that id. Checks the session and its owner first, like submit.
   */
  async reserveTaskId(owner: string): Promise<{ ok: true; task_id: number; config: SessionConfig } | { ok: false; error: Failure }> {
    const refused = this.config ? ownerFailure(this.config, owner) : SESSION_NOT_FOUND;
    return refused ? { ok: false, error: refused } : { ok: true, task_id: this.open.reserveId(), config: this.config! };
  }

  /** Gives back a reservation no task will use (the request failed before submit); false when it was not held. */
  async releaseTaskId(taskId: number): Promise<boolean> {
    return this.open.takeReservedId(taskId);
  }

  /** Client-sealed prompts: an id bound to a token only its client gets, used once (session-queue/sealed-reservations.ts). */
  async reserveSealed(owner: string): Promise<SealedOutcome> {
    return this.sealed.reserve(await this.reserveTaskId(owner), (id) => this.open.takeReservedId(id));
  }

  async takeSealed(owner: string, taskId: number, token: string): Promise<Failure | null> {
    return this.sealed.use(this.config ? ownerFailure(this.config, owner) : SESSION_NOT_FOUND, taskId, token);
  }

  /**
   * Whether `miner` holds task `taskId` here (a live or reconnecting replica, of an open task or a straggler),
   * and the task's payload descriptor: the router's off-chain routes authorize miners with it.
   */
  async holdsTask(taskId: string, miner: string): Promise<{ held: boolean; payload: PayloadDescriptor | null }> {
    return this.verifies.holding(holdsTask(this.open, this.stragglers, taskId, miner), taskId, miner); // validators read prompts
  }

  /** The miner's one off-chain result write of a payload task it holds (two racing writes cannot both pass). */
  async claimResult(
    taskId: string,
    miner: string,
    sha256: string,
  ): Promise<{ ok: true; payload: PayloadDescriptor } | { ok: false; error: Failure }> {
    return claimResultWrite(this.open, this.stragglers, taskId, miner, sha256);
  }

  /**
   * Whether the router may write an audit row of this refusal (one per miner and reason class per window, a few
   * per miner: session-queue/audit-gate.ts); a row it writes expires with the session's other objects.
   */
  async admitAudit(miner: string, reasonClass: string): Promise<boolean> {
    const now = Date.now();
    if (!this.audits.admit(miner, reasonClass, now)) return false;
    this.armAlarm(this.retention.written(now));
    return true;
  }

  // ── RPC: a completion; `embed`: an embedding job (session-queue/embedding-jobs.ts) ───────────────────

  async submit(req: SubmitRequest): Promise<SubmitOutcome> {
    const config = this.config;
    if (!config) return { ok: false, error: SESSION_NOT_FOUND };
    // A reservation is used once, whatever the outcome: refused submits must not leave ids behind.
    const reservedId = req.task_id !== undefined && this.open.takeReservedId(req.task_id);
    const refused = admissionFailure(config, req, { used: this.usedTokens, reserved: this.open.reservedTokens });
    if (refused) return { ok: false, error: refused };
    const unservable = await servingFailure(config, req, this.unbenched(), (model) => poolFor(this.env).serving(model), this.deadlines);
    if (unservable) return { ok: false, error: unservable };
    if (req.task_id !== undefined && !reservedId) {
      return { ok: false, error: { code: "conflict", message: `task id ${req.task_id} is not reserved here (any more)` } };
    }
    const now = Date.now();
    const task = createTask(this.store, this.open, config, req, now, (at) => this.clock.height(at));
    // Hand it to miners, then answer at once (a stream of NDJSON events) or once it finishes.
    const waiting = this.waiters.add(task.id, req.stream);
    this.armAlarm(task.deadline_at);
    this.pump();
    return Waiters.outcome(waiting, { task_id: String(task.id), model: config.model, created_at: now });
  }

  async embed(req: EmbedRequest): Promise<EmbedOutcome> {
    return this.config ? this.embeds.submit(req) : { ok: false, error: SESSION_NOT_FOUND };
  }

  // ── assignment ───────────────────────────────────────────────────────────────────────────────────────

  /** Hands queued work to connected miners with spare capacity (session-queue/miner-load.ts). */
  private pump(): void {
    if (this.open.queued === 0) return;
    if (this.load.stale(Date.now())) this.ctx.waitUntil(this.refreshReputation());
    const miners = this.unbenched();
    if (miners.length === 0) return;
    const now = Date.now();
    this.open.fillQueued((task) => {
      if (this.rounds.has(task.id)) return false; // its replica set is frozen
      let need = task.redundancy - countingReplicas(task).length;
      for (const m of need > 0 ? this.load.pick(task, miners, need) : []) {
        this.assign(task, m, now);
        need--;
      }
      return need > 0;
    });
  }

  /** Its router-set deadlines come from the session's ack window and the miner's declared speed (fair-deadlines.ts). */
  private assign(task: OpenTask, { ws, claims }: MinerSocket, now: number): void {
    const miner = claims.address;
    const windows = replicaWindows(this.config!.ack_timeout, task.assign.params.max_tokens, claims, this.deadlines);
    const replica = newReplica(miner, now, windows);
    this.store.insertReplica(task.id, miner, now, this.clock.height(now), replica.ack_deadline, replica.commit_deadline);
    task.replicas.set(miner, replica);
    this.load.bump(miner, 1);
    this.advance(task, now);
    this.armAlarm(Math.min(replica.ack_deadline, clientCutoff(task, replica)));
    this.sockets.send(ws, assignMessage(task, replica, this.clock.height(now)));
  }

  // ── the miners' messages ─────────────────────────────────────────────────────────────────────────────

  override async webSocketMessage(ws: WebSocket, raw: string | ArrayBuffer): Promise<void> {
    const claims = this.sockets.claims(ws)!;
    const msg = parseMessage(SessionMinerMessage, raw, MAX_MINER_FRAME_CHARS);
    if (!msg) return this.refuse(ws, "invalid_message", "message does not match the protocol");
    if (msg.type === "embeddings" || msg.type === "embed_failed") return this.embeds.onAnswer(ws, claims.address, msg, this.rounds);
    if (msg.type === "verification" || msg.type === "verify_failed") return this.verifies.onAnswer(ws, claims.address, msg);
    for (const frame of unfold(msg)) await this.onTaskMessage(ws, claims.address, frame); // session-queue/folded-commit.ts
  }

  private async onTaskMessage(ws: WebSocket, miner: string, msg: TaskMessage): Promise<void> {
    const task = this.open.get(Number(msg.task_id));
    const replica = task?.replicas.get(miner);
    if (!task || !replica) {
      const straggler = this.stragglers.live(Number(msg.task_id), miner);
      if (straggler) return this.stragglers.onMessage(straggler.late, straggler.replica, msg);
      return this.refuse(ws, "unknown_task", "task is not assigned to this miner", msg.task_id);
    }
    // A miner that dropped (not timed out) may still deliver: its replica comes back to life.
    if (replica.state === "disconnected" && (msg.type === "precommit" || msg.type === "commit" || msg.type === "ack")) {
      replica.state = replica.commitment ? "precommitted" : "acked";
      this.load.bump(miner, 1);
    }
    if (!replicaIsLive(replica.state)) return this.refuse(ws, "late", `replica is ${replica.state}`, msg.task_id);
    const now = Date.now();
    switch (msg.type) {
      case "ack":
        return this.onAck(task, replica, now);
      case "token":
        return this.onToken(task, replica, msg.text);
      case "precommit":
        return this.onPrecommit(task, replica, msg, now);
      case "commit":
        return this.onCommit(task, replica, msg, now);
      case "release": {
        this.dropReplica(task, replica, "released", msg.reason);
        const failure = msg.code === "context_length_exceeded" && refusedByEveryone(task, replica.miner, this.unbenched());
        if (failure && this.open.has(task.id)) this.fail(task, failure.code, failure.message, Date.now());
        return;
      }
    }
  }

  private onAck(task: OpenTask, replica: Replica, now: number): void {
    if (replica.state !== "assigned") return;
    replica.state = "acked";
    replica.acked_at = now;
    // Not written: every durable write holds this object's outgoing messages until it is on disk.
    this.advance(task, now, false);
  }

  /** Streams only text a quorum of live replicas has produced (session-queue/stream-prefix.ts); kept only while a client streams. */
  private onToken(task: OpenTask, r: Replica, text: string): void {
    // Independent samples share no prefix: the text goes out whole once the validators have chosen it.
    if (!task.stream || (task.independentSeeds && task.redundancy > 1)) return;
    if (!extendStream(r, text, textByteCap(task.assign.params)))
      return this.dropReplica(task, r, "rejected", "streamed more text than max_tokens allows");
    const streams = countingReplicas(task).map((x) => x.streamed);
    this.waiters.confirm(task.id, streams, quorumOf(task.redundancy));
  }

  private async onPrecommit(task: OpenTask, replica: Replica, msg: MinerMessage<"precommit">, now: number): Promise<void> {
    if (replica.state === "precommitted") return;
    const signed = await checkPrecommit(this.config!.id, replica, msg, this.domain);
    if (!this.open.has(task.id) || !replicaIsLive(replica.state)) return; // it ended (e.g. cancelled) while this was checked
    if (!signed) return this.dropReplica(task, replica, "rejected", "precommit signature does not recover to the miner's address");
    this.store.recordPrecommit(task.id, replica.miner, replica.acked_at ?? now, now, msg.hash, msg.signature);
    replica.state = "precommitted";
    replica.commitment = msg.hash as Hex;
    this.advance(task, now);
    if (this.reveal(task, now)) this.pump();
  }

  private async onCommit(task: OpenTask, replica: Replica, msg: MinerMessage<"commit">, now: number): Promise<void> {
    if (replica.state !== "precommitted") return this.dropReplica(task, replica, "rejected", "commit arrived before a precommit");
    if (isHeld(replica)) return; // delivered again after a reconnect: it is in
    const scope = { session: this.config!.id, task: msg.task_id, miner: replica.miner };
    const reveal = await checkCommit(this.env.PAYLOADS, scope, task, replica, msg);
    // R2 may have been awaited: a quorum may have closed the task meanwhile, making this replica a straggler.
    const straggler = this.stragglers.live(task.id, replica.miner);
    if (straggler?.replica === replica) return this.stragglers.onMessage(straggler.late, replica, msg);
    if (!this.open.has(task.id) || replica.state !== "precommitted" || isHeld(replica)) return;
    if (!reveal.ok) return this.dropReplica(task, replica, "rejected", reveal.fault);
    const unverifiable = this.verifies.onCommit(task, replica, msg); // verified tasks: the token ids, counted
    if (unverifiable) return this.dropReplica(task, replica, "rejected", unverifiable);
    // Checked and written, then held until every live replica has precommitted (session-queue/barrier.ts).
    holdCommit(this.store, task, replica, msg, reveal.hash, now);
    this.load.bump(replica.miner, -1);
    if (task.stream && msg.text.startsWith(replica.streamed)) this.onToken(task, replica, msg.text.slice(replica.streamed.length));
    this.reveal(task, now);
    this.pump();
  }

  /** Applies the commits the barrier releases, once every live replica has precommitted; then judges the task. */
  private reveal(task: OpenTask, now: number): boolean {
    if (!this.open.has(task.id) || !revealHeld(task, this.store)) return false;
    this.advance(task, now);
    this.settle(task, now);
    return true;
  }

  // ── consensus ────────────────────────────────────────────────────────────────────────────────────────

  /** Moves the task to the furthest phase a quorum of its replicas has reached. */
  private advance(task: OpenTask, now: number, persist = true): void {
    const states = countingReplicas(task).map((r) => r.state);
    const next = quorumPhase(states, task.redundancy);
    if (!canTransition(task.state, next)) return;
    if (persist) this.store.setTaskState(task.id, next, now);
    task.state = next;
  }

  /**
   * Closes the task when its committed replicas settle it (quorum.ts `settleStep`): by exact hashes, or through a
   * similarity round when outputs differ — except off-chain results (not in SQLite) and private ones (validators
   * are not on the allowlist), which are judged on hashes alone.
   */
  private settle(task: OpenTask, now: number): void {
    if (this.rounds.has(task.id) || this.verifies.has(task.id) || !barrierOpen(task)) return; // the validators' answers close it; no reveal before every precommit
    const mode = this.config!.consensus;
    const committed = replicasOf(task).filter((r) => r.state === "committed" && !r.verify_failed);
    if (committed.length <= (task.recruitingAt ?? 0)) return; // nothing new since it lacked a quorum
    const step = settleStep({
      mode: mode === "verify" ? "exact" : mode, // replicas share the seed: hashes agree, validators re-score the chosen one
      redundancy: task.redundancy,
      committed: committed.length,
      best: largestHashGroup(committed)?.length ?? 0,
      live: liveReplicas(task).length > 0,
      filling: mode === "similarity" && committed.length < task.redundancy && canStillFill(task, this.unbenched(), now),
    });
    if (step === "wait") return;
    let note: string | undefined;
    if (step === "similarity") {
      if (task.assign.payload?.encrypted || this.store.hasOffchainResult(task.id)) {
        note = "off-chain or private outputs are not shown to validators; judged on exact hashes";
      } else {
        note = this.rounds.start(task, committed, now) ?? undefined;
        // The replica set is frozen once judged: a replica assigned now would only ever be a straggler.
        if (!note) return this.open.unqueue(task.id);
      }
    }
    const verdict = exactVerdict(committed, task.redundancy, note ? { note } : {});
    this.conclude(task, verdict.chosen, verdict.consensus, now);
  }

  /** A verdict reaches the client only with a quorum (session-queue/quorum-gate.ts), else more replicas or 409. */
  private conclude(task: OpenTask, chosen: string, verdict: ConsensusView, now: number): void {
    const cfg = this.config!;
    const recruit = canRecruit(task, this.unbenched(), cfg.consensus, now);
    const gate = quorumGate(verdict, { redundancy: task.redundancy, bestEffort: cfg.best_effort === true, canRecruit: recruit });
    if ("close" in gate && this.verifies.intercept(task, chosen, gate.close, now)) return; // validators re-score it first
    if ("close" in gate) return this.close(task, chosen, gate.close, now);
    if ("fail" in gate) return this.fail(task, gate.fail.code, gate.fail.message, now);
    task.recruitingAt = replicasOf(task).filter((r) => r.state === "committed" && !r.verify_failed).length;
    this.open.requeue(task.id); // the missing replicas are judged with the others once they commit
    this.pump();
  }

  /** Records the consensus, charges the chosen replica's usage and answers the client. */
  private close(task: OpenTask, miner: string, verdict: ConsensusView, now: number): void {
    // Charged: the usage the router can check (session-queue/miner-input.ts), never above the reservation.
    const { usage, disputed } = checkedUsage(task, verdict, miner);
    const consensus = disputed.length ? { ...verdict, usage_disputed: disputed } : verdict;
    const result = { ...this.store.resultOf(task.id, miner), usage };
    this.store.closeTask(task.id, now, this.clock.height(now), result, consensus, this.usedTokens + usage.total_tokens);
    this.usedTokens += usage.total_tokens;
    task.state = "closed";
    // Replicas still running are stragglers now: they no longer count against their miner's capacity.
    for (const r of liveReplicas(task)) this.load.bump(r.miner, -1);
    this.stragglers.add(task, consensus);
    this.outcomes.push(replicaOutcomes(task, consensus, result.usage.total_tokens, false, this.stamp(now)));
    this.finish(task);
  }

  private fail(task: OpenTask, code: Failure["code"], message: string, now: number, expired = false, paid: CancelBill["paid"] = []): void {
    this.outcomes.push([...replicaOutcomes(task, null, 0, expired, this.stamp(now)), ...paid]);
    for (const r of liveReplicas(task)) {
      this.setReplicaState(task, r, "cancelled", message);
      this.sockets.sendTo(r.miner, { type: "cancel", task_id: String(task.id), reason: code });
    }
    this.store.failTask(task.id, now, this.clock.height(now), code, message);
    task.state = "failed";
    this.finish(task);
  }

  /** Releases the task's reservation and answers whoever waits for it. */
  private finish(task: OpenTask): void {
    this.open.remove(task);
    this.rounds.drop(task.id); // cancelled mid-round: no verdict comes after it
    this.verifies.drop(task.id);
    if (task.assign.payload) this.armAlarm(this.retention.written(Date.now())); // its R2 objects expire from now
    this.waiters.answer(task.id, () => this.view(task.id));
  }

  /** Takes a replica out of the task (timeout, fault, hand-back, disconnect) and finds a replacement. */
  // ── replicas that end early ──────────────────────────────────────────────────────────────────────────

  private dropReplica(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void {
    this.setReplicaState(task, r, state, reason);
    if (state === "rejected" || state === "timed_out" || state === "cancelled") {
      this.sockets.sendTo(r.miner, { type: "cancel", task_id: String(task.id), reason: `${state}: ${reason}` });
    }
    this.open.requeue(task.id);
    // Its leaving may open the barrier (it never precommitted): held commits are revealed and judged.
    if (!this.reveal(task, Date.now())) this.settle(task, Date.now());
    if (this.open.has(task.id)) this.pump();
  }

  private setReplicaState(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void {
    this.store.setReplicaState(task.id, r.miner, state, reason, r.acked_at);
    if (replicaIsLive(r.state) && !isHeld(r)) this.load.bump(r.miner, -1); // a held commit freed its slot already
    r.state = state;
    r.reason = reason;
  }

  // ── miners come and go ───────────────────────────────────────────────────────────────────────────────

  /** A miner's session channel (the router verified its token; session-queue/channels.ts decides the join). */
  override async fetch(request: Request): Promise<Response> {
    const res = await this.channels.open(request);
    if (res.status !== 101) return res;
    await this.refreshReputation();
    this.pump();
    this.embeds.pump();
    return res;
  }

  /** The pool revoked the miner's tokens below `epoch`: its channel closes, such a token joins no more. */
  async revokeMiner(address: string, epoch: number): Promise<void> {
    this.channels.revoke(address, epoch);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.minerGone(ws, `socket closed (${code}${reason ? `: ${reason}` : ""})`);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.minerGone(ws, "socket error");
  }

  private minerGone(ws: WebSocket, reason: string): void {
    const claims = this.sockets.claims(ws);
    // A newer socket for the same miner takes over its work; only a miner with no socket left is gone.
    if (!claims || this.sockets.supersededBy(ws, claims.address)) return;
    for (const [task, r] of liveWorkOf(this.open.list(), claims.address)) this.dropReplica(task, r, "disconnected", reason);
    this.stragglers.minerGone(claims.address, reason, Date.now());
    this.embeds.minerGone(claims.address, reason);
  }

  // ── deadlines ────────────────────────────────────────────────────────────────────────────────────────

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    this.rounds.expire(now);
    this.verifies.expire(now);
    this.embeds.expire(now);
    const connected = new Set(this.sockets.connected().map((m) => m.claims.address));
    sweepTasks(this.open.list(), now, connected, now >= this.wokeAt + RECONNECT_GRACE_MS, {
      validating: (id) => this.rounds.has(id) || this.verifies.has(id),
      isOpen: (id) => this.open.has(id),
      settle: (task, at) => this.settle(task, at),
      reveal: (task, at) => this.reveal(task, at),
      fail: (task, code, message, at, expired) => this.fail(task, code, message, at, expired),
      setReplicaState: (task, r, state, reason) => this.setReplicaState(task, r, state, reason),
      dropReplica: (task, r, state, reason) => this.dropReplica(task, r, state, reason),
    });
    this.stragglers.sweep(now);
    this.pump();
    this.armAlarm(
      nextDeadline(
        this.open.values(),
        this.stragglers.values(),
        [...this.rounds.deadlines(), ...this.verifies.deadlines()],
        this.config?.consensus === "similarity",
        Date.now(),
      ),
    );
    // Last, so no deadline waits for R2: expired prompts, results and audit rows of finished tasks go.
    const isOpen = (id: number) => this.open.has(id) || this.stragglers.get(id) !== undefined;
    if (this.config) this.armAlarm(await this.retention.sweepIfDue(this.config.id, Date.now(), isOpen));
  }

  /** Arms the alarm for `at` unless an earlier one is already set (storage writes need no await in a DO). */
  private armAlarm(at: number | null): void {
    if (at === null) return;
    if (this.alarmAt !== null && this.alarmAt <= at && this.alarmAt > Date.now() - 1000) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  // ── helpers ──────────────────────────────────────────────────────────────────────────────────────────

  /** What reads see (session-queue/reads.ts: each through the ownership rule); only once the session exists. */
  private reads(): ReadState {
    const connectedMiners = this.sockets.connected().map((m) => m.claims.address);
    return { config: this.config!, store: this.store, open: this.open, usedTokens: this.usedTokens, connectedMiners };
  }

  private view(taskId: number): TaskView {
    return this.store.view(this.store.task(taskId)!, this.config!, this.open.get(taskId));
  }

  private refreshReputation(): Promise<void> {
    return this.load.refresh(this.sockets.connected().map((m) => m.claims.address));
  }

  /** Connected miners the pool has not benched. */
  private unbenched(): MinerSocket[] {
    return this.sockets.connected().filter((m) => !this.load.benched(m.claims.address));
  }

  private refuse(ws: WebSocket, code: string, message: string, task_id?: string): void {
    this.sockets.send(ws, { type: "error", code, message, ...(task_id ? { task_id } : {}) });
  }

  private stamp(now: number) {
    return { session_id: this.config!.id, at: now, block: this.clock.height(now) };
  }
}
