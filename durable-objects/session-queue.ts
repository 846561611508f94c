import { DurableObject } from "cloudflare:workers";
import { recoverTypedDataAddress, type Hex } from "viem";
import type { Failure } from "../shared/errors.ts";
import type { PayloadDescriptor } from "../shared/payloads.ts";
import { isGreedy, type GenerationParams, type PromptSpec } from "../shared/generation.ts";
import {
  PROTOCOL_VERSION,
  SessionMinerMessage,
  parseMessage,
  type SessionServerMessage,
} from "../shared/protocol.ts";
import { precommitTypedData, resultHash } from "../shared/signing.ts";
import { canTransition, phaseRank, replicaIsLive, type ReplicaState, type TaskState } from "../shared/task-state.ts";
import type { ConsensusView, SessionConfig, SessionUsage, TaskResult, TaskView } from "../shared/views.ts";
import { type MinerClaims } from "./miner-sockets.ts";
import { checkOffchainCommit } from "./session-queue/commit-checks.ts";
import { withDefaults } from "./session-queue/config.ts";
import type { StreamEvent, SubmitOutcome, SubmitRequest } from "./session-queue/rpc.ts";
import { nodePool, oracle } from "./stubs.ts";
import { heightAt, type BlockSnapshot } from "./oracle.ts";
import { OutcomeReporter } from "./outcome-reporter.ts";
import type { Outcome, ReplicaOutcome } from "./reputation.ts";
import { migrate, type ReplicaRow, type TaskRow } from "./session-schema.ts";
import {
  distanceMatrix,
  judgeSimilarity,
  medianMatrix,
  wellFormed,
} from "./similarity.ts";

interface Replica {
  miner: string;
  state: ReplicaState;
  assigned_at: number;
  ack_deadline: number;
  commit_deadline: number;
  /** Acks live in memory only (a lost ack is re-sent by the miner); everything later is written. */
  acked_at: number | null;
  hash: Hex | null;
  /** Text streamed so far by this replica (only while a client streams). */
  streamed: string;
  committed_at?: number;
  /** Why the replica ended, when it ended badly (reported to the pool's ledger). */
  reason?: string;
}

/** An open task, mirrored in memory so the hot path reads nothing back from storage. */
interface OpenTask {
  id: number;
  state: TaskState;
  redundancy: number;
  deadline_at: number;
  reserved: number;
  stream: boolean;
  assign: Omit<Extract<SessionServerMessage, { type: "assign" }>, "ack_deadline" | "commit_deadline" | "block">;
  precommit_ms: number;
  replicas: Map<string, Replica>;
  /** Similarity sessions: each replica of a sampled task draws its own seed (independent samples). */
  independentSeeds: boolean;
}

/** Similarity consensus in progress: validators embed the committed outputs (memory only; redone after eviction). */
interface Validation {
  /** The replicas judged, in the order their texts were sent. */
  miners: string[];
  texts: string[];
  /** Validator → deadline of its answer. */
  asked: Map<string, number>;
  /** Validator → the distance matrix of its embeddings. */
  answers: Map<string, number[][]>;
  tried: Set<string>;
}

interface Waiter {
  resolve?: (task: TaskView) => void;
  writer?: WritableStreamDefaultWriter<Uint8Array>;
  /** Text already sent to the streaming client; a replacement replica resumes after it. */
  sent: string;
}

const encoder = new TextEncoder();
/** A miner that was connected before an eviction gets this long to reconnect before its tasks move on. */
const RECONNECT_GRACE_MS = 3_000;
/** How stale the pool's reputation map may get before pump asks for a fresh one (off the hot path). */
const REPUTATION_TTL_MS = 5_000;
/** How long a validator has to embed a task's outputs (the first call may load its embedding model). */
const VALIDATION_TIMEOUT_MS = 15_000;

/**
 * One session's task queue: its tasks and their lifecycle (SQLite), the WebSockets of the miners serving
 * it (hibernation API) and per-phase deadlines (one alarm, armed at the earliest deadline).
 */
export class SessionQueue extends DurableObject<Env> {
  private sql: SqlStorage;
  private config: SessionConfig | null;
  private open = new Map<number, OpenTask>();
  /** Tasks that still need replicas, oldest first. */
  private pending: number[] = [];
  private load = new Map<string, number>();
  private waiters = new Map<number, Waiter>();
  private used = 0;
  /** Task ids are per session; this object is their only writer, so the next one is known in memory. */
  private nextId = 1;
  /** Ids handed out by reserveTaskId() and not yet submitted (memory only: after an eviction they are refused). */
  private reservedIds = new Set<number>();
  /** Attachments are structured-clone copies: read each socket's once, not on every dispatch. */
  private claimsBySocket = new WeakMap<WebSocket, MinerClaims>();
  private reserved = 0;
  private clock: BlockSnapshot | null = null;
  private alarmAt: number | null = null;
  private readonly wokeAt = Date.now();
  /** Task outcomes on their way to the NodePool's ledger, batched. */
  private outcomes: OutcomeReporter;
  /** Closed tasks whose slower replicas are still live: they are judged when they report or time out. */
  private lingering = new Map<number, { task: OpenTask; consensus: ConsensusView }>();
  private validations = new Map<number, Validation>();
  /** Pool reputation of the miners seen here: pump prefers higher scores and skips benched miners. */
  private reputation = new Map<string, { score: number; benched: boolean }>();
  private reputationAt = 0;
  private reputationLoading: Promise<void> | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    // The pool answers a report with those miners' new standing: a bench takes effect here at once.
    this.outcomes = new OutcomeReporter(
      async (batch) => {
        for (const [miner, rep] of Object.entries(await nodePool(env).recordOutcomes(batch))) this.reputation.set(miner, rep);
      },
      (p) => ctx.waitUntil(p),
    );
    migrate(this.sql);
    const meta = this.sql.exec<{ key: string; value: string }>(`SELECT key, value FROM meta`).toArray();
    const get = (k: string) => meta.find((m) => m.key === k)?.value;
    this.config = get("config") ? withDefaults(JSON.parse(get("config")!) as SessionConfig, env) : null;
    this.used = Number(get("used") ?? 0);
    this.nextId = (this.sql.exec<{ m: number | null }>(`SELECT MAX(id) AS m FROM tasks`).one().m ?? 0) + 1;
    this.restoreOpenTasks();
    ctx.blockConcurrencyWhile(async () => {
      this.clock = await oracle(env).snapshot();
      this.alarmAt = await ctx.storage.getAlarm();
      // Tasks in flight across an eviction: give their miners a moment to reconnect, then move them on.
      if (this.open.size > 0 || this.lingering.size > 0) this.armAlarm(Date.now() + RECONNECT_GRACE_MS);
      // Acks live in memory only, so a restored replica reads `assigned` even if its miner acked: re-send the
      // assign over the still-open (hibernated) socket with a fresh ack window; the miner re-acks it.
      for (const task of this.open.values()) {
        for (const r of task.replicas.values()) {
          const ws = r.state === "assigned" ? this.socketFor(r.miner) : undefined;
          if (!ws) continue;
          r.ack_deadline = Math.min(task.deadline_at, Date.now() + Math.round(this.config!.ack_timeout * 1000));
          this.sendAssign(ws, task, r);
        }
      }
    });
  }

  // ── RPC: session ─────────────────────────────────────────────────────────────────────────────────────

  async init(config: SessionConfig): Promise<{ ok: true; session: SessionConfig } | { ok: false; error: Failure }> {
    if (this.config) return { ok: false, error: { code: "session_exists", message: `session ${config.id} exists` } };
    this.config = withDefaults(config, this.env);
    this.sql.exec(`INSERT INTO meta (key, value) VALUES ('config', ?)`, JSON.stringify(this.config));
    return { ok: true, session: this.config };
  }

  async describe(): Promise<{ config: SessionConfig; usage: SessionUsage } | null> {
    if (!this.config) return null;
    const counts = this.sql
      .exec<{ total: number }>(`SELECT COUNT(*) AS total FROM tasks`)
      .one();
    return {
      config: this.config,
      usage: {
        deposit: this.config.deposit,
        used: this.used,
        reserved: this.reserved,
        available: this.available(),
        tasks_total: counts.total,
        tasks_open: this.open.size,
        connected_miners: this.connectedMiners().map((m) => m.claims.address),
      },
    };
  }

  async listTasks(limit = 50, before?: number): Promise<TaskView[] | null> {
    if (!this.config) return null;
    const rows = this.sql
      .exec<TaskRow>(`SELECT * FROM tasks WHERE id < ? ORDER BY id DESC LIMIT ?`, before ?? Number.MAX_SAFE_INTEGER, limit)
      .toArray();
    return rows.map((row) => this.view(row));
  }

  // ── RPC: off-chain payloads (v2/v3) ──────────────────────────────────────────────────────────────────

  /**
   * Reserves the next task id, so the router can store (and encrypt under the task key) a task's payload
   * before submitting it with that id. Checks the session and its owner first, like submit.
   */
  async reserveTaskId(owner: string): Promise<{ ok: true; task_id: number; config: SessionConfig } | { ok: false; error: Failure }> {
    const config = this.config;
    if (!config) return { ok: false, error: { code: "session_not_found", message: "unknown session" } };
    if (config.owner !== "*" && config.owner !== owner) {
      return { ok: false, error: { code: "forbidden", message: `session ${config.id} belongs to another owner` } };
    }
    const id = this.nextId++;
    this.reservedIds.add(id);
    return { ok: true, task_id: id, config };
  }

  /**
   * Whether `miner` holds task `taskId` here (a live or reconnecting replica, of an open task or a straggler),
   * and the task's payload descriptor: the router's off-chain routes authorize miners with it.
   */
  async holdsTask(taskId: string, miner: string): Promise<{ held: boolean; payload: PayloadDescriptor | null }> {
    const id = Number(taskId);
    const task = this.open.get(id) ?? this.lingering.get(id)?.task;
    const r = task?.replicas.get(miner.toLowerCase());
    return { held: !!r && (replicaIsLive(r.state) || r.state === "disconnected"), payload: task?.assign.payload ?? null };
  }

  async getTask(taskId: string): Promise<TaskView | null> {
    const row = this.sql.exec<TaskRow>(`SELECT * FROM tasks WHERE id = ?`, Number(taskId)).toArray()[0];
    return row ? this.view(row) : null;
  }

  // ── RPC: completions ─────────────────────────────────────────────────────────────────────────────────

  async submit(req: SubmitRequest): Promise<SubmitOutcome> {
    const config = this.config;
    if (!config) return { ok: false, error: { code: "session_not_found", message: "unknown session" } };
    // A reservation is used once, whatever the outcome: refused submits must not leave ids behind.
    const reserved = req.task_id !== undefined && this.reservedIds.delete(req.task_id);
    if (config.owner !== "*" && config.owner !== req.owner) {
      return { ok: false, error: { code: "forbidden", message: `session ${config.id} belongs to another owner` } };
    }
    if (req.model && req.model !== config.model) {
      return {
        ok: false,
        error: {
          code: "invalid_request",
          message: `session ${config.id} serves model ${config.model}, not ${req.model}`,
          details: [{ path: "model", message: `expected ${config.model}` }],
        },
      };
    }
    // Byte-level tokenizers never make more tokens than bytes, so this reservation bounds the charge.
    const reserve =
      encoder.encode(req.input.prompt + (req.input.prompt_template ?? "")).length + (req.payload?.prompt_bytes ?? 0) + req.params.max_tokens;
    if (this.available() < reserve) {
      return {
        ok: false,
        error: {
          code: "deposit_exhausted",
          message: `session ${config.id} has ${this.available()} tokens available; this task may use up to ${reserve}`,
          details: { deposit: config.deposit, used: this.used, reserved: this.reserved, required: reserve },
        },
      };
    }
    if (this.connectedMiners().length === 0 && !(await nodePool(this.env).hasMinersFor(config.model))) {
      return {
        ok: false,
        error: { code: "no_miner_available", message: `no miner serves model ${config.model}`, details: { model: config.model } },
      };
    }

    const now = Date.now();
    const timeoutMs = Math.round((req.timeout_s ?? config.task_timeout) * 1000);
    const deadline = now + timeoutMs;
    const redundancy = Math.max(1, Math.min(config.redundancy, req.max_miners ?? config.redundancy));
    const block = this.block(now);
    if (req.task_id !== undefined && !reserved) {
      return { ok: false, error: { code: "conflict", message: `task id ${req.task_id} is not reserved here (any more)` } };
    }
    const id = req.task_id ?? this.nextId++;
    // The seed defaults to the task id so every replica of a sampled task draws the same numbers.
    const params: GenerationParams = { ...req.params, seed: req.params.seed ?? id };
    // A similarity session samples independently per replica unless the client pinned the seed.
    const independentSeeds = config.consensus === "similarity" && !isGreedy(params) && req.params.seed === undefined;
    this.sql.exec(
        `INSERT INTO tasks (id, state, request, redundancy, created_at, updated_at, created_block, deadline_at, deadline_block,
           reserved, client_reference, stream)
         VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id,
        JSON.stringify({ input: req.input, params, ...(independentSeeds ? { independent_seeds: true } : {}), ...(req.payload ? { payload: req.payload } : {}) }),
        redundancy,
        now,
        now,
        block,
        deadline,
        this.block(deadline),
        reserve,
        req.client_reference ?? null,
        req.stream ? 1 : 0,
      );
    const task: OpenTask = {
      id,
      state: "queued",
      redundancy,
      deadline_at: deadline,
      reserved: reserve,
      stream: req.stream,
      assign: { type: "assign", session_id: config.id, task_id: String(id), model: config.model, input: req.input, params, stream: req.stream, ...(req.payload ? { payload: req.payload } : {}) },
      precommit_ms: Math.round((req.precommit_timeout_s ?? req.timeout_s ?? config.task_timeout) * 1000),
      replicas: new Map(),
      independentSeeds,
    };
    this.open.set(id, task);
    this.reserved += reserve;
    this.pending.push(id);

    const waiter: Waiter = { sent: "" };
    this.waiters.set(id, waiter);
    let events: ReadableStream<Uint8Array> | undefined;
    let done: Promise<TaskView> | undefined;
    if (req.stream) {
      const pipe = new TransformStream<Uint8Array, Uint8Array>();
      waiter.writer = pipe.writable.getWriter();
      events = pipe.readable;
    } else {
      done = new Promise<TaskView>((resolve) => (waiter.resolve = resolve));
    }
    this.armAlarm(deadline);
    this.pump();

    if (events) return { ok: true, stream: true, task_id: String(id), model: config.model, created_at: now, events };
    const view = await done!;
    if (view.status === "failed") return { ok: false, error: view.error!, task: view };
    return { ok: true, stream: false, task: view };
  }

  // ── WebSockets: miners ───────────────────────────────────────────────────────────────────────────────

  override async fetch(request: Request): Promise<Response> {
    const claims = JSON.parse(request.headers.get("X-Miner-Claims") ?? "null") as MinerClaims | null;
    if (!claims || request.headers.get("Upgrade") !== "websocket") return new Response("expected a miner WebSocket", { status: 426 });
    const config = this.config;
    if (!config) return Response.json({ error: { code: "session_not_found", message: "unknown session" } }, { status: 404 });
    if (!claims.models.includes(config.model) || (config.mode === "dedicated" && !config.dedicated_miners.includes(claims.address))) {
      return Response.json({ error: { code: "forbidden", message: "this miner may not serve this session" } }, { status: 403 });
    }
    // One socket per miner: a reconnect replaces a half-open predecessor.
    for (const old of this.ctx.getWebSockets(claims.address)) old.close(4001, "replaced by a newer connection");

    const pair = new WebSocketPair();
    const server = pair[1];
    this.ctx.acceptWebSocket(server, [claims.address]);
    server.serializeAttachment(claims);
    this.send(server, {
      type: "welcome",
      session_id: config.id,
      miner: claims.address,
      model: config.model,
      block: this.block(Date.now()),
      protocol: PROTOCOL_VERSION,
    });
    await this.refreshReputation();
    // Re-send what this miner holds but may have missed while it was away; it dedups by task id.
    for (const task of this.open.values()) {
      const r = task.replicas.get(claims.address);
      if (r && (r.state === "assigned" || r.state === "acked")) this.sendAssign(server, task, r);
    }
    this.pump();
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(ws: WebSocket, raw: string | ArrayBuffer): Promise<void> {
    const claims = this.claims(ws)!;
    const msg = parseMessage(SessionMinerMessage, raw);
    if (!msg) return this.send(ws, { type: "error", code: "invalid_message", message: "message does not match the protocol" });
    if (msg.type === "embeddings" || msg.type === "embed_failed") return this.onValidatorAnswer(ws, claims.address, msg);
    const task = this.open.get(Number(msg.task_id));
    const replica = task?.replicas.get(claims.address);
    if (!task || !replica) {
      const late = this.lingering.get(Number(msg.task_id));
      const straggler = late?.task.replicas.get(claims.address);
      if (late && straggler && replicaIsLive(straggler.state)) return this.onStraggler(late, straggler, msg);
      return this.send(ws, { type: "error", code: "unknown_task", message: "task is not assigned to this miner", task_id: msg.task_id });
    }
    // A miner that dropped (not timed out) may still deliver: its replica comes back to life.
    if (replica.state === "disconnected" && (msg.type === "precommit" || msg.type === "commit" || msg.type === "ack")) {
      replica.state = replica.hash ? "precommitted" : "acked";
      this.bumpLoad(claims.address, 1);
    }
    if (!replicaIsLive(replica.state)) {
      return this.send(ws, { type: "error", code: "late", message: `replica is ${replica.state}`, task_id: msg.task_id });
    }
    const now = Date.now();
    switch (msg.type) {
      case "ack":
        if (replica.state === "assigned") {
          replica.state = "acked";
          replica.acked_at = now;
          // Not written: every durable write holds this object's outgoing messages until it is on disk.
          this.advance(task, now, false);
        }
        return;
      case "token":
        return this.onToken(task, replica, msg.text);
      case "precommit": {
        if (replica.state === "precommitted") return;
        if (!(await this.signedBy(claims.address, msg))) {
          return this.dropReplica(task, replica, "rejected", "precommit signature does not recover to the miner's address");
        }
        replica.state = "precommitted";
        replica.hash = msg.hash as Hex;
        this.sql.exec(
          `UPDATE replicas SET state = 'precommitted', acked_at = ?, precommitted_at = ?, hash = ?, signature = ?
           WHERE task_id = ? AND miner = ?`,
          replica.acked_at ?? now, now, msg.hash, msg.signature, task.id, replica.miner,
        );
        this.advance(task, now);
        return;
      }
      case "commit": {
        if (replica.state !== "precommitted") {
          return this.dropReplica(task, replica, "rejected", "commit arrived before a precommit");
        }
        const urnFault = offchainCommitFault(task, msg);
        if (urnFault) return this.dropReplica(task, replica, "rejected", urnFault);
        if (msg.result_urn) {
          // Off-chain result: the router checked its signature and hashed its plaintext when it was stored.
          const bad = await checkOffchainCommit(this.env.PAYLOADS, this.config!.id, msg.task_id, replica.miner, msg.result_urn, replica.hash!);
          const late = this.lingering.get(task.id); // R2 was awaited: a quorum may have closed the task meanwhile
          if (late?.task.replicas.get(replica.miner) === replica && replicaIsLive(replica.state)) return this.onStraggler(late, replica, msg);
          if (!this.open.has(task.id) || replica.state !== "precommitted") return;
          if (bad) return this.dropReplica(task, replica, "rejected", bad);
        } else if (task.assign.payload?.encrypted) {
          return this.dropReplica(task, replica, "rejected", "a private task's result must be committed as an encrypted off-chain URN");
        } else if (resultHash(msg.text) !== replica.hash) {
          return this.dropReplica(task, replica, "rejected", "commit does not match the precommitted hash");
        }
        replica.state = "committed";
        replica.committed_at = now;
        this.bumpLoad(replica.miner, -1);
        this.sql.exec(
          `UPDATE replicas SET state = 'committed', committed_at = ?, text = ?, finish_reason = ?, usage = ?, inference_ms = ?,
             first_token_ms = ? WHERE task_id = ? AND miner = ?`,
          now, msg.text, msg.finish_reason, JSON.stringify(msg.usage), msg.inference_ms, msg.first_token_ms ?? null, task.id, replica.miner,
        );
        if (msg.result_urn) this.sql.exec(`UPDATE replicas SET result_urn = ? WHERE task_id = ? AND miner = ?`, msg.result_urn, task.id, replica.miner);
        if (task.stream) this.onToken(task, replica, msg.text.slice(replica.streamed.length));
        this.advance(task, now);
        this.settle(task, now);
        this.pump();
        return;
      }
      case "release":
        this.dropReplica(task, replica, "released", msg.reason);
        return;
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.minerGone(ws, `socket closed (${code}${reason ? `: ${reason}` : ""})`);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.minerGone(ws, "socket error");
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    const connected = new Set(this.connectedMiners().map((m) => m.claims.address));
    for (const [id, v] of [...this.validations]) {
      for (const [miner, deadline] of [...v.asked]) if (deadline <= now) v.asked.delete(miner);
      const task = this.open.get(id);
      if (task) this.continueValidation(task, v, now);
    }
    for (const task of [...this.open.values()]) {
      if (this.validations.has(task.id)) continue; // bounded by validator deadlines, which end at the task's
      // Every replica reported (e.g. before an eviction dropped a validation in flight): judge them now.
      if (![...task.replicas.values()].some((r) => replicaIsLive(r.state))) {
        this.settle(task, now);
        if (!this.open.has(task.id) || this.validations.has(task.id)) continue;
      }
      if (task.deadline_at <= now) {
        this.fail(task, "timeout", `task ${task.id} did not complete within its deadline`, now);
        continue;
      }
      for (const r of task.replicas.values()) {
        if (!replicaIsLive(r.state)) continue;
        if (r.state === "assigned" && r.ack_deadline <= now) this.dropReplica(task, r, "timed_out", "missed the ack deadline");
        else if (r.commit_deadline <= now) this.dropReplica(task, r, "timed_out", "missed the commit deadline");
        else if (!connected.has(r.miner) && now >= this.wokeAt + RECONNECT_GRACE_MS) {
          this.dropReplica(task, r, "disconnected", "miner did not reconnect");
        }
      }
    }
    for (const late of [...this.lingering.values()]) {
      for (const r of late.task.replicas.values()) {
        if (!replicaIsLive(r.state)) continue;
        if (r.state === "assigned" && r.ack_deadline <= now) this.endStraggler(late, r, "timed_out", "missed the ack deadline", now);
        else if (r.commit_deadline <= now) this.endStraggler(late, r, "timed_out", "missed the commit deadline", now);
      }
    }
    this.pump();
    this.armAlarm(this.nextDeadline());
  }

  // ── lifecycle ────────────────────────────────────────────────────────────────────────────────────────

  /** Hands queued work to connected miners with spare capacity, least loaded first. */
  private pump(): void {
    if (this.pending.length === 0) return;
    if (Date.now() - this.reputationAt > REPUTATION_TTL_MS) this.ctx.waitUntil(this.refreshReputation());
    const miners = this.connectedMiners().filter((m) => !this.reputation.get(m.claims.address)?.benched);
    if (miners.length === 0) return;
    const now = Date.now();
    const ratio = (m: { claims: MinerClaims }) => (this.load.get(m.claims.address) ?? 0) / m.claims.capacity;
    const score = (m: { claims: MinerClaims }) => this.reputation.get(m.claims.address)?.score ?? 1;
    const still: number[] = [];
    for (const id of this.pending) {
      const task = this.open.get(id);
      if (!task || this.validations.has(id)) continue;
      let need = task.redundancy - [...task.replicas.values()].filter((r) => replicaIsLive(r.state) || r.state === "committed").length;
      if (need > 0) {
        const candidates = miners
          .filter((m) => !task.replicas.has(m.claims.address) && (this.load.get(m.claims.address) ?? 0) < m.claims.capacity)
          .sort((a, b) => ratio(a) - ratio(b) || score(b) - score(a));
        for (const m of candidates.slice(0, need)) {
          this.assign(task, m.ws, m.claims.address, now);
          need--;
        }
      }
      if (need > 0) still.push(id);
    }
    this.pending = still;
  }

  private assign(task: OpenTask, ws: WebSocket, miner: string, now: number): void {
    const cfg = this.config!;
    const replica: Replica = {
      miner,
      state: "assigned",
      assigned_at: now,
      ack_deadline: Math.min(task.deadline_at, now + Math.round(cfg.ack_timeout * 1000)),
      commit_deadline: Math.min(task.deadline_at, now + task.precommit_ms),
      acked_at: null,
      hash: null,
      streamed: "",
    };
    task.replicas.set(miner, replica);
    this.bumpLoad(miner, 1);
    this.sql.exec(
      `INSERT OR REPLACE INTO replicas (task_id, miner, state, assigned_at, assigned_block, ack_deadline, commit_deadline)
       VALUES (?, ?, 'assigned', ?, ?, ?, ?)`,
      task.id, miner, now, this.block(now), replica.ack_deadline, replica.commit_deadline,
    );
    this.advance(task, now);
    this.armAlarm(replica.ack_deadline);
    this.sendAssign(ws, task, replica);
  }

  private sendAssign(ws: WebSocket, task: OpenTask, r: Replica): void {
    const params = task.independentSeeds ? { ...task.assign.params, seed: replicaSeed(task.assign.params.seed, r.miner) } : task.assign.params;
    this.send(ws, { ...task.assign, params, ack_deadline: r.ack_deadline, commit_deadline: r.commit_deadline, block: this.block(Date.now()) });
  }

  /** Moves the task to the furthest phase a quorum of its replicas has reached. */
  private advance(task: OpenTask, now: number, persist = true): void {
    const quorum = Math.floor(task.redundancy / 2) + 1;
    const ranks = [...task.replicas.values()].filter((r) => replicaIsLive(r.state) || r.state === "committed").map((r) => phaseRank(r.state as TaskState));
    ranks.sort((a, b) => b - a);
    const needed = Math.min(quorum, ranks.length);
    const rank = needed > 0 ? ranks[needed - 1] : 0;
    const next = (["queued", "assigned", "acked", "precommitted", "committed"] as const)[rank];
    if (next && canTransition(task.state, next)) {
      task.state = next;
      if (persist) this.sql.exec(`UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?`, next, now, task.id);
    }
  }

  /**
   * Closes the task once a quorum of committed replicas agrees exactly, or when no replica is left running (and,
   * in `exact` sessions, every replica slot has reported). Then, unless the session is `exact`, differing outputs
   * go to validators for similarity consensus. A `similarity` session always waits until no replica is running:
   * its honest replicas differ, so an early exact pair proves little.
   */
  private settle(task: OpenTask, now: number): void {
    if (this.validations.has(task.id)) return; // the validators' answers close it
    const mode = this.config!.consensus;
    const quorum = Math.floor(task.redundancy / 2) + 1;
    const committed = [...task.replicas.values()].filter((r) => r.state === "committed");
    const groups = new Map<string, Replica[]>();
    for (const r of committed) groups.set(r.hash!, [...(groups.get(r.hash!) ?? []), r]);
    const best = [...groups.values()].sort((a, b) => b.length - a.length)[0];
    const live = [...task.replicas.values()].some((r) => replicaIsLive(r.state));
    // Exact sessions wait for replacements to fill every replica; the others judge a quorum of what came in. A
    // similarity session also waits for an empty slot that a connected miner can still fill (one busy at
    // assignment, or a replacement): two samples judge an outlier far less surely than k do.
    const filling = mode === "similarity" && committed.length < task.redundancy && this.canStillFill(task, now);
    const finished = !live && !filling && committed.length >= (mode === "exact" ? task.redundancy : quorum);
    if (!best || (mode === "similarity" && task.redundancy > 1 ? !finished : best.length < quorum && !finished)) return;
    let note: string | undefined;
    if (best.length < committed.length && (mode === "similarity" || best.length < quorum) && mode !== "exact" && committed.length >= 2) {
      // Off-chain results are not in SQLite, and a private task's plaintext must not reach validators that are
      // not on its allowlist: such tasks are judged on hashes alone.
      const offchain = this.sql.exec(`SELECT 1 FROM replicas WHERE task_id = ? AND result_urn IS NOT NULL LIMIT 1`, task.id).toArray().length > 0;
      if (task.assign.payload?.encrypted || offchain) note = "off-chain or private outputs are not shown to validators; judged on exact hashes";
      else if (this.startValidation(task, committed, now)) return;
      else note = `no validator serving ${this.config!.embedding_model} is connected; fell back to exact hashes`;
    }
    this.close(task, best[0].miner, {
      method: task.redundancy === 1 ? "single" : "exact",
      status: best.length >= quorum ? "agreed" : "no_quorum",
      quorum,
      hash: best[0].hash!,
      agreed: best.map((r) => r.miner),
      outliers: committed.filter((r) => r.hash !== best[0].hash).map((r) => r.miner),
      ...(note ? { note } : {}),
    }, now);
  }

  /**
   * Whether a similarity task may still get a missing replica: a connected, unbenched miner is not in it yet,
   * and enough time is left for that replica and its validation (the last VALIDATION_TIMEOUT_MS are kept for
   * judging what came in).
   */
  private canStillFill(task: OpenTask, now: number): boolean {
    if (now >= task.deadline_at - VALIDATION_TIMEOUT_MS) return false;
    return this.connectedMiners().some((m) => !task.replicas.has(m.claims.address) && !this.reputation.get(m.claims.address)?.benched);
  }

  /** Records the consensus, charges the chosen replica's usage and answers the client. */
  private close(task: OpenTask, miner: string, consensus: ConsensusView, now: number): void {
    const chosen = this.sql
      .exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? AND miner = ?`, task.id, miner)
      .one();
    const usage = JSON.parse(chosen.usage!) as { prompt_tokens: number; completion_tokens: number };
    const result: TaskResult = {
      text: chosen.text!,
      finish_reason: chosen.finish_reason as TaskResult["finish_reason"],
      usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
      hash: chosen.hash!,
      miner,
      inference_ms: chosen.inference_ms ?? 0,
    };
    this.used += result.usage.total_tokens;
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('used', ?)`, String(this.used));
    // committed → validated → closed happen together here; validated_at records the consensus moment.
    this.sql.exec(
      `UPDATE tasks SET state = 'closed', updated_at = ?, finished_at = ?, validated_at = ?, finished_block = ?, result = ?, consensus = ?,
         charged = ? WHERE id = ?`,
      now, now, now, this.block(now), JSON.stringify(result), JSON.stringify(consensus), result.usage.total_tokens, task.id,
    );
    task.state = "closed";
    // Replicas still running are stragglers now: they no longer count against their miner's capacity.
    for (const r of task.replicas.values()) if (replicaIsLive(r.state)) this.bumpLoad(r.miner, -1);
    const stragglers = [...task.replicas.values()].filter((r) => replicaIsLive(r.state));
    if (stragglers.length > 0) {
      this.lingering.set(task.id, { task, consensus });
      this.armAlarm(Math.min(...stragglers.map((r) => (r.state === "assigned" ? r.ack_deadline : r.commit_deadline))));
    }
    this.report(task, consensus, result.usage.total_tokens, now, false);
    this.finish(task);
  }

  // ── similarity consensus ─────────────────────────────────────────────────────────────────────────────

  /** Asks validators to embed the committed outputs; false when no validator is connected. */
  private startValidation(task: OpenTask, committed: Replica[], now: number): boolean {
    const v: Validation = { miners: [], texts: [], asked: new Map(), answers: new Map(), tried: new Set() };
    for (const r of committed) {
      const row = this.sql.exec<{ text: string | null }>(`SELECT text FROM replicas WHERE task_id = ? AND miner = ?`, task.id, r.miner).one();
      v.miners.push(r.miner);
      v.texts.push(row.text ?? "");
    }
    if (this.askValidators(task, v, Math.max(1, this.config!.validator_count), now) === 0) return false;
    this.validations.set(task.id, v);
    // The replica set is frozen once judged: a replica assigned now would only ever be a straggler.
    this.pending = this.pending.filter((id) => id !== task.id);
    return true;
  }

  /**
   * Sends `embed` to up to `count` untried validators: connected miners that run the session's embedding model,
   * miners outside the task first (they have no stake in its outcome), then the least loaded.
   */
  private askValidators(task: OpenTask, v: Validation, count: number, now: number): number {
    const model = this.config!.embedding_model;
    const deadline = Math.min(task.deadline_at, now + VALIDATION_TIMEOUT_MS);
    if (deadline <= now) return 0;
    const ratio = (m: { claims: MinerClaims }) => (this.load.get(m.claims.address) ?? 0) / m.claims.capacity;
    const picked = this.connectedMiners()
      .filter((m) => {
        const a = m.claims.address;
        const own = task.replicas.get(a)?.state;
        // Not a miner this task already caught misbehaving, nor one the pool benched.
        return m.claims.models.includes(model) && !v.tried.has(a) && own !== "rejected" && own !== "timed_out" && !this.reputation.get(a)?.benched;
      })
      .sort((a, b) => Number(task.replicas.has(a.claims.address)) - Number(task.replicas.has(b.claims.address)) || ratio(a) - ratio(b))
      .slice(0, count);
    for (const m of picked) {
      v.tried.add(m.claims.address);
      v.asked.set(m.claims.address, deadline);
      this.send(m.ws, { type: "embed", task_id: String(task.id), model, texts: v.texts, deadline });
    }
    if (picked.length > 0) this.armAlarm(deadline);
    return picked.length;
  }

  private onValidatorAnswer(
    ws: WebSocket,
    miner: string,
    msg: Extract<SessionMinerMessage, { type: "embeddings" | "embed_failed" }>,
  ): void {
    const task = this.open.get(Number(msg.task_id));
    const v = this.validations.get(Number(msg.task_id));
    if (!task || !v || !v.asked.has(miner)) {
      return this.send(ws, { type: "error", code: "unknown_task", message: "no validation of this task was asked of this miner", task_id: msg.task_id });
    }
    v.asked.delete(miner);
    const now = Date.now();
    if (msg.type === "embed_failed") {
      console.warn(`session ${this.config!.id} task ${task.id}: validator ${miner} could not embed: ${msg.reason}`);
    } else if (msg.model !== this.config!.embedding_model || !wellFormed(msg.vectors, v.texts.length)) {
      console.warn(`session ${this.config!.id} task ${task.id}: validator ${miner} sent malformed embeddings (model ${msg.model})`);
    } else {
      v.answers.set(miner, distanceMatrix(msg.vectors));
    }
    this.continueValidation(task, v, now);
  }

  /** Concludes once every asked validator answered or timed out; replaces missing ones while time remains. */
  private continueValidation(task: OpenTask, v: Validation, now: number): void {
    if (v.asked.size > 0) return;
    const wanted = Math.max(1, this.config!.validator_count);
    if (v.answers.size < wanted && this.askValidators(task, v, wanted - v.answers.size, now) > 0) return;
    this.validations.delete(task.id);
    const quorum = Math.floor(task.redundancy / 2) + 1;
    const replicas = v.miners.map((m) => task.replicas.get(m)!);
    if (v.answers.size === 0) {
      // Nobody could judge similarity: the largest exact group stands, without a quorum.
      const groups = new Map<string, Replica[]>();
      for (const r of replicas) groups.set(r.hash!, [...(groups.get(r.hash!) ?? []), r]);
      const best = [...groups.values()].sort((a, b) => b.length - a.length)[0];
      return this.close(task, best[0].miner, {
        method: "exact", status: best.length >= quorum ? "agreed" : "no_quorum", quorum, hash: best[0].hash!,
        agreed: best.map((r) => r.miner), outliers: replicas.filter((r) => r.hash !== best[0].hash).map((r) => r.miner),
        note: "no validator answered in time; fell back to exact hashes",
      }, now);
    }
    // A streaming client may already hold a prefix: prefer an agreeing output that continues it.
    const sent = this.waiters.get(task.id)?.sent ?? "";
    const j = judgeSimilarity(medianMatrix([...v.answers.values()]), this.config!.dispersion_threshold, (i) => v.texts[i].startsWith(sent));
    const round = (x: number) => Math.round(x * 1e4) / 1e4;
    this.close(task, v.miners[j.chosen], {
      method: "similarity",
      status: j.agreed.length >= quorum ? "agreed" : "no_quorum",
      quorum,
      hash: replicas[j.chosen].hash!,
      agreed: j.agreed.map((i) => v.miners[i]),
      outliers: j.outliers.map((i) => v.miners[i]),
      similarity: {
        model: this.config!.embedding_model,
        threshold: this.config!.dispersion_threshold,
        validators: [...v.answers.keys()],
        distances: Object.fromEntries(v.miners.map((m, i) => [m, round(j.distances[i])])),
        dispersion: round(j.dispersion),
      },
    }, now);
  }

  private fail(task: OpenTask, code: Failure["code"], message: string, now: number): void {
    this.report(task, null, 0, now, code === "timeout");
    for (const r of task.replicas.values()) {
      if (!replicaIsLive(r.state)) continue;
      this.setReplicaState(task, r, "cancelled", message);
      const ws = this.socketFor(r.miner);
      if (ws) this.send(ws, { type: "cancel", task_id: String(task.id), reason: code });
    }
    task.state = "failed";
    this.sql.exec(
      `UPDATE tasks SET state = 'failed', updated_at = ?, finished_at = ?, finished_block = ?, error_code = ?, error_message = ? WHERE id = ?`,
      now, now, this.block(now), code, message, task.id,
    );
    this.finish(task);
  }

  /** Releases the task's reservation and answers whoever waits for it. */
  private finish(task: OpenTask): void {
    this.open.delete(task.id);
    this.pending = this.pending.filter((id) => id !== task.id);
    this.reserved -= task.reserved;
    const waiter = this.waiters.get(task.id);
    this.waiters.delete(task.id);
    if (!waiter) return;
    const view = this.view(this.sql.exec<TaskRow>(`SELECT * FROM tasks WHERE id = ?`, task.id).one());
    waiter.resolve?.(view);
    if (waiter.writer) {
      const w = waiter.writer;
      if (view.status === "closed" && view.result) {
        const rest = view.result.text.startsWith(waiter.sent) ? view.result.text.slice(waiter.sent.length) : "";
        if (rest) this.emit(w, { t: "token", text: rest });
        this.emit(w, { t: "done", task: view });
      } else {
        this.emit(w, { t: "error", error: view.error ?? { code: "task_failed", message: "task failed" }, task: view });
      }
      w.close().catch(() => {});
    }
  }

  /** Takes a replica out of the task (timeout, fault, hand-back, disconnect) and finds a replacement. */
  private dropReplica(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void {
    this.setReplicaState(task, r, state, reason);
    if (state === "rejected" || state === "timed_out") {
      const ws = this.socketFor(r.miner);
      if (ws) this.send(ws, { type: "cancel", task_id: String(task.id), reason: `${state}: ${reason}` });
    }
    if (!this.pending.includes(task.id)) this.pending.push(task.id);
    this.settle(task, Date.now());
    if (this.open.has(task.id)) this.pump();
  }

  private setReplicaState(task: OpenTask, r: Replica, state: ReplicaState, reason: string): void {
    if (replicaIsLive(r.state)) this.bumpLoad(r.miner, -1);
    r.state = state;
    r.reason = reason;
    // An in-memory ack is kept on record when the replica ends before its precommit would have written it.
    this.sql.exec(`UPDATE replicas SET state = ?, reason = ?, acked_at = COALESCE(acked_at, ?) WHERE task_id = ? AND miner = ?`,
      state, reason, r.acked_at, task.id, r.miner);
  }

  private minerGone(ws: WebSocket, reason: string): void {
    const claims = this.claims(ws);
    if (!claims) return;
    // A newer socket for the same miner takes over its work; only a miner with no socket left is gone.
    if (this.ctx.getWebSockets(claims.address).some((s) => s !== ws && s.readyState === WebSocket.OPEN)) return;
    for (const task of [...this.open.values()]) {
      const r = task.replicas.get(claims.address);
      if (r && replicaIsLive(r.state)) this.dropReplica(task, r, "disconnected", reason);
    }
    for (const late of [...this.lingering.values()]) {
      const r = late.task.replicas.get(claims.address);
      if (r && replicaIsLive(r.state)) this.endStraggler(late, r, "disconnected", reason, Date.now());
    }
  }

  /**
   * Streams only text a quorum of live replicas has produced: greedy replicas agree token by token, so the
   * client sees the consensus as fast as the quorum's slowest member, never a lone fast liar's text. With
   * k = 1 that is the one replica; a replacement resumes after the text already sent.
   */
  private onToken(task: OpenTask, r: Replica, text: string): void {
    r.streamed += text;
    const waiter = this.waiters.get(task.id);
    // Independent samples share no prefix: the text goes out whole once the validators have chosen it.
    if (!waiter?.writer || (task.independentSeeds && task.redundancy > 1)) return;
    const quorum = Math.floor(task.redundancy / 2) + 1;
    const from = waiter.sent.length;
    const texts = [...task.replicas.values()]
      .filter((x) => (replicaIsLive(x.state) || x.state === "committed") && x.streamed.length > from && x.streamed.startsWith(waiter.sent))
      .map((x) => x.streamed);
    let confirmed = from;
    let best = "";
    for (const t of texts) {
      // The longest prefix of t that at least `quorum` texts (t included) share.
      const shared = texts.map((u) => commonPrefix(t, u, from)).sort((a, b) => b - a);
      if (shared.length >= quorum && shared[quorum - 1] > confirmed) [confirmed, best] = [shared[quorum - 1], t];
    }
    if (confirmed <= from) return;
    waiter.sent = best.slice(0, confirmed);
    this.emit(waiter.writer, { t: "token", text: best.slice(from, confirmed) });
  }

  /** Whether a precommit's EIP-712 signature recovers to the miner that sent it. */
  private async signedBy(miner: string, msg: Extract<SessionMinerMessage, { type: "precommit" }>): Promise<boolean> {
    const signer = await recoverTypedDataAddress({
      ...precommitTypedData({ session: this.config!.id, task: msg.task_id, miner: miner as Hex, hash: msg.hash as Hex }),
      signature: msg.signature as Hex,
    }).catch(() => null);
    return signer?.toLowerCase() === miner.toLowerCase();
  }

  /**
   * A replica still live after a quorum closed its task. It is held to the same rules (signed precommit, commit
   * matching it, deadlines) and its result is recorded against the consensus, but it earns nothing and
   * changes nothing the client already has.
   */
  private async onStraggler(
    late: { task: OpenTask; consensus: ConsensusView },
    r: Replica,
    msg: SessionMinerMessage,
  ): Promise<void> {
    const { task, consensus } = late;
    const now = Date.now();
    if (msg.type === "ack" && r.state === "assigned") {
      r.state = "acked";
      r.acked_at = now;
    } else if (msg.type === "precommit" && r.state !== "precommitted") {
      if (!(await this.signedBy(r.miner, msg))) return this.endStraggler(late, r, "rejected", "precommit signature does not recover to the miner's address", now);
      r.state = "precommitted";
      r.hash = msg.hash as Hex;
      this.sql.exec(
        `UPDATE replicas SET state = 'precommitted', acked_at = ?, precommitted_at = ?, hash = ?, signature = ? WHERE task_id = ? AND miner = ?`,
        r.acked_at ?? now, now, msg.hash, msg.signature, task.id, r.miner,
      );
    } else if (msg.type === "commit") {
      if (r.state !== "precommitted") return this.endStraggler(late, r, "rejected", "commit arrived before a precommit", now);
      const mismatch = offchainCommitFault(task, msg) ?? (msg.result_urn
        ? await checkOffchainCommit(this.env.PAYLOADS, this.config!.id, msg.task_id, r.miner, msg.result_urn, r.hash!)
        : task.assign.payload?.encrypted ? "a private task's result must be committed as an encrypted off-chain URN"
        : resultHash(msg.text) !== r.hash ? "commit does not match the precommitted hash" : null);
      if (!replicaIsLive(r.state)) return; // ended while R2 was awaited
      if (mismatch) return this.endStraggler(late, r, "rejected", mismatch, now);
      if (msg.result_urn) this.sql.exec(`UPDATE replicas SET result_urn = ? WHERE task_id = ? AND miner = ?`, msg.result_urn, task.id, r.miner);
      const agreed = r.hash === consensus.hash;
      (agreed ? consensus.agreed : consensus.outliers).push(r.miner);
      r.state = "committed";
      r.committed_at = now;
      this.sql.exec(
        `UPDATE replicas SET state = 'committed', committed_at = ?, text = ?, finish_reason = ?, usage = ?, inference_ms = ?,
           first_token_ms = ?, reason = 'committed after the quorum closed the task' WHERE task_id = ? AND miner = ?`,
        now, msg.text, msg.finish_reason, JSON.stringify(msg.usage), msg.inference_ms, msg.first_token_ms ?? null, task.id, r.miner,
      );
      this.sql.exec(`UPDATE tasks SET consensus = ? WHERE id = ?`, JSON.stringify(consensus), task.id);
      this.judgeStraggler(late, r, agreed ? "agreed" : "outlier", agreed ? null : "late result disagrees with consensus", now);
    } else if (msg.type === "release") {
      return this.endStraggler(late, r, "released", msg.reason, now);
    }
  }

  private endStraggler(
    late: { task: OpenTask; consensus: ConsensusView },
    r: Replica,
    state: "rejected" | "timed_out" | "released" | "disconnected",
    reason: string,
    now: number,
  ): void {
    r.state = state;
    r.reason = reason;
    this.sql.exec(`UPDATE replicas SET state = ?, reason = ?, acked_at = COALESCE(acked_at, ?) WHERE task_id = ? AND miner = ?`,
      state, reason, r.acked_at, late.task.id, r.miner);
    if (state === "rejected" || state === "timed_out") {
      const ws = this.socketFor(r.miner);
      if (ws) this.send(ws, { type: "cancel", task_id: String(late.task.id), reason: `${state}: ${reason}` });
    }
    this.judgeStraggler(late, r, state, reason, now);
  }

  /** Reports a straggler's outcome (unrewarded) and forgets the task once no replica is live. */
  private judgeStraggler(late: { task: OpenTask; consensus: ConsensusView }, r: Replica, outcome: Outcome, reason: string | null, now: number): void {
    if (late.consensus.status === "agreed") {
      this.outcomes.push([{ miner: r.miner, session_id: this.config!.id, task_id: String(late.task.id), outcome, reason,
        latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null, reward: 0, at: now, block: this.block(now) }]);
    }
    if (![...late.task.replicas.values()].some((x) => replicaIsLive(x.state))) this.lingering.delete(late.task.id);
  }

  /** Queues one outcome per replica that ended for a reason its miner answers for; live ones at a timeout timed out. */
  private report(task: OpenTask, consensus: ConsensusView | null, tokens: number, now: number, timedOut: boolean): void {
    const agreed = new Set(consensus?.status === "agreed" ? consensus.agreed : []);
    const share = agreed.size ? Math.floor(tokens / agreed.size) : 0;
    const block = this.block(now);
    const out: ReplicaOutcome[] = [];
    for (const r of task.replicas.values()) {
      let outcome: Outcome | null = null;
      let reason = r.reason ?? null;
      if (r.state === "committed" && consensus?.status === "agreed") {
        outcome = agreed.has(r.miner) ? "agreed" : "outlier";
        if (outcome === "outlier") reason = "result disagrees with consensus";
      } else if (r.state === "rejected" || r.state === "timed_out" || r.state === "disconnected" || r.state === "released") {
        outcome = r.state;
      } else if (timedOut && replicaIsLive(r.state)) {
        outcome = "timed_out";
        reason = `still ${r.state} at the task deadline`;
      }
      if (!outcome) continue;
      out.push({
        miner: r.miner, session_id: this.config!.id, task_id: String(task.id), outcome, reason,
        latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null,
        reward: outcome === "agreed" ? share : 0, at: now, block,
      });
    }
    this.outcomes.push(out);
  }

  /** Fetches the pool's reputation of the connected miners; concurrent callers share one request. */
  private refreshReputation(): Promise<void> {
    this.reputationLoading ??= nodePool(this.env)
      .reputations(this.connectedMiners().map((m) => m.claims.address))
      .then((map) => {
        this.reputation = new Map(Object.entries(map));
        this.reputationAt = Date.now();
        this.pump();
      })
      .catch((err) => console.error(`reputation refresh failed: ${String(err)}`))
      .finally(() => (this.reputationLoading = null));
    return this.reputationLoading;
  }

  // ── helpers ──────────────────────────────────────────────────────────────────────────────────────────

  private restoreOpenTasks(): void {
    // Open tasks, and closed ones whose stragglers are still live (they are judged when they report).
    const tasks = this.sql
      .exec<TaskRow>(
        `SELECT * FROM tasks WHERE state NOT IN ('closed','failed')
           OR (state = 'closed' AND id IN (SELECT task_id FROM replicas WHERE state IN ('assigned','acked','precommitted')))
         ORDER BY id`,
      )
      .toArray();
    for (const row of tasks) {
      const closed = row.state === "closed";
      const request = JSON.parse(row.request) as { input: PromptSpec; params: GenerationParams; independent_seeds?: boolean; payload?: PayloadDescriptor };
      const task: OpenTask = {
        id: row.id,
        state: row.state,
        redundancy: row.redundancy,
        deadline_at: row.deadline_at,
        reserved: row.reserved,
        stream: row.stream === 1,
        assign: {
          type: "assign",
          session_id: this.config!.id,
          task_id: String(row.id),
          model: this.config!.model,
          input: request.input,
          params: request.params,
          stream: false, // the streaming client did not survive the eviction
          ...(request.payload ? { payload: request.payload } : {}),
        },
        precommit_ms: row.deadline_at - row.created_at,
        replicas: new Map(),
        independentSeeds: request.independent_seeds === true,
      };
      task.stream = false;
      for (const r of this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ?`, row.id)) {
        task.replicas.set(r.miner, {
          miner: r.miner,
          state: r.state,
          assigned_at: r.assigned_at,
          ack_deadline: r.ack_deadline,
          commit_deadline: r.commit_deadline,
          acked_at: r.acked_at,
          hash: (r.hash as Hex | null) ?? null,
          streamed: "",
        });
        if (replicaIsLive(r.state) && !closed) this.bumpLoad(r.miner, 1);
      }
      if (closed) {
        this.lingering.set(row.id, { task, consensus: JSON.parse(row.consensus!) as ConsensusView });
        continue;
      }
      this.open.set(row.id, task);
      this.reserved += row.reserved;
      this.pending.push(row.id);
    }
  }

  private view(row: TaskRow): TaskView {
    const request = JSON.parse(row.request) as { input: PromptSpec; params: GenerationParams; payload?: PayloadDescriptor };
    const replicas = this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? ORDER BY assigned_at`, row.id).toArray();
    // An open task's newest phases may be in memory only (acks): overlay them on what storage says.
    const open = this.open.get(row.id);
    if (open) {
      row = { ...row, state: open.state };
      for (const r of replicas) {
        const live = open.replicas.get(r.miner);
        if (live) Object.assign(r, { state: live.state, acked_at: live.acked_at ?? r.acked_at });
      }
    }
    const consensus = row.consensus ? (JSON.parse(row.consensus) as ConsensusView) : null;
    const committed = replicas.filter((r) => r.state === "committed");
    return {
      task_id: String(row.id),
      session_id: this.config!.id,
      status: row.state,
      model: this.config!.model,
      input: request.input,
      params: request.params,
      payload: request.payload ?? null,
      stream: row.stream === 1,
      client_reference: row.client_reference,
      redundancy: row.redundancy,
      created_at: row.created_at,
      updated_at: row.updated_at,
      finished_at: row.finished_at,
      created_block: row.created_block,
      finished_block: row.finished_block,
      deadline_at: row.deadline_at,
      deadline_block: row.deadline_block,
      assigned_miners: replicas.map((r) => r.miner),
      results: { data: committed.map((r) => r.text ?? ""), miners: committed.map((r) => r.miner) },
      result: row.result ? (JSON.parse(row.result) as TaskResult) : null,
      consensus,
      replicas: replicas.map((r) => ({
        miner: r.miner,
        state: r.state,
        assigned_at: r.assigned_at,
        assigned_block: r.assigned_block,
        acked_at: r.acked_at,
        precommitted_at: r.precommitted_at,
        committed_at: r.committed_at,
        hash: r.hash,
        signature: r.signature,
        latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null,
        inference_ms: r.inference_ms,
        first_token_ms: r.first_token_ms,
        result_urn: r.result_urn ?? null,
        agreed: consensus && r.state === "committed" ? consensus.agreed.includes(r.miner) : null,
        reason: r.reason,
      })),
      error: row.error_code ? { code: row.error_code as Failure["code"], message: row.error_message ?? "" } : null,
    };
  }

  private connectedMiners(): { ws: WebSocket; claims: MinerClaims }[] {
    const out: { ws: WebSocket; claims: MinerClaims }[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const claims = this.claims(ws);
      if (claims) out.push({ ws, claims });
    }
    return out;
  }

  private claims(ws: WebSocket): MinerClaims | null {
    let claims = this.claimsBySocket.get(ws);
    if (!claims) {
      claims = (ws.deserializeAttachment() as MinerClaims | null) ?? undefined;
      if (claims) this.claimsBySocket.set(ws, claims);
    }
    return claims ?? null;
  }

  private socketFor(miner: string): WebSocket | undefined {
    return this.ctx.getWebSockets(miner).find((ws) => ws.readyState === WebSocket.OPEN);
  }

  private bumpLoad(miner: string, delta: number): void {
    this.load.set(miner, Math.max(0, (this.load.get(miner) ?? 0) + delta));
  }

  private available(): number {
    return (this.config?.deposit ?? 0) - this.used - this.reserved;
  }

  private block(at: number): number {
    if (!this.clock) return 0;
    // Refresh the cached clock now and then so drift between oracle and session stays small.
    if (at - this.clock.at > 60_000) this.ctx.waitUntil(oracle(this.env).snapshot().then((s) => void (this.clock = s)));
    return heightAt(this.clock, at);
  }

  private nextDeadline(): number | null {
    let next: number | null = null;
    const consider = (t: number) => (next = next === null ? t : Math.min(next, t));
    for (const { task } of this.lingering.values()) {
      for (const r of task.replicas.values()) if (replicaIsLive(r.state)) consider(r.state === "assigned" ? r.ack_deadline : r.commit_deadline);
    }
    for (const v of this.validations.values()) for (const d of v.asked.values()) consider(d);
    for (const task of this.open.values()) {
      consider(task.deadline_at);
      // A similarity task waiting for a slot to fill is judged with what it has from here on (see canStillFill).
      if (this.config?.consensus === "similarity" && task.deadline_at - VALIDATION_TIMEOUT_MS > Date.now()) consider(task.deadline_at - VALIDATION_TIMEOUT_MS);
      for (const r of task.replicas.values()) {
        if (r.state === "assigned") consider(r.ack_deadline);
        else if (replicaIsLive(r.state)) consider(r.commit_deadline);
      }
    }
    return next;
  }

  /** Arms the alarm for `at` unless an earlier one is already set (storage writes need no await in a DO). */
  private armAlarm(at: number | null): void {
    if (at === null) return;
    if (this.alarmAt !== null && this.alarmAt <= at && this.alarmAt > Date.now() - 1000) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  private send(ws: WebSocket, msg: SessionServerMessage): void {
    try {
      ws.send(JSON.stringify(msg));
    } catch {
      // A socket closing under us is handled by webSocketClose.
    }
  }

  private emit(w: WritableStreamDefaultWriter<Uint8Array>, ev: StreamEvent): void {
    w.write(encoder.encode(JSON.stringify(ev) + "\n")).catch(() => {});
  }
}

/**
 * An off-chain commit's text lives in R2 only (the hash check covers the stored object, not `text`), and only
 * tasks with a payload descriptor read results from R2: anything else would let a miner commit unchecked text.
 */
function offchainCommitFault(task: OpenTask, msg: Extract<SessionMinerMessage, { type: "commit" }>): string | null {
  if (!msg.result_urn) return null;
  if (!task.assign.payload) return "this task takes inline results only";
  return msg.text === "" ? null : "an off-chain commit must not carry text";
}

/** A replica's own seed in a similarity session: stable per miner (so a re-sent assign samples the same). */
function replicaSeed(seed: number, miner: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${seed}:${miner.toLowerCase()}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
  return (h >>> 0) & 0x7fffffff;
}

/** Length of the common prefix of a and b, given they agree on the first `from` characters. */
function commonPrefix(a: string, b: string, from: number): number {
  const n = Math.min(a.length, b.length);
  let i = from;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}
