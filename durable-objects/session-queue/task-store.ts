import type { Hex } from "viem";
import type { Failure } from "../../shared/errors.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import type { ReplicaState, TaskState } from "../../shared/task-state.ts";
import type { ConsensusView, SessionConfig, TaskResult, TaskView } from "../../shared/views.ts";
import { migrate, type ReplicaRow, type TaskRow } from "../session-schema.ts";
import { closeTaskRow } from "./close-row.ts";
import { embeddingView } from "./embedding-store.ts";
import { taskPromptBytes } from "./prompt-bytes.ts";
import type { OpenTask, Replica, StoredRequest } from "./task.ts";

// Every SQL statement of a SessionQueue: its settings and usage (`meta`), tasks and replicas, what an evicted
// object restores, and the task view clients read. Writes are not awaited: a Durable Object's SQLite calls are
// synchronous and its output gate holds outgoing messages until they are durable.

type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

export class TaskStore {
  private readonly sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.sql = sql;
    // Nothing is written before the session is created (saveConfig): an id outside the catalog that reaches a
    // queue leaves no storage behind. A stored session upgrades in place.
    if (this.created()) migrate(sql);
  }

  private created(): boolean {
    // `meta` is in every schema this object ever wrote, versioned or not.
    return this.sql.exec(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'`).toArray().length > 0;
  }

  // ── session ──────────────────────────────────────────────────────────────────────────────────────────

  /** The stored settings (as written, before defaults) and tokens used so far. */
  loadSession(): { config: SessionConfig | null; used: number; lastTaskId: number } {
    if (!this.created()) return { config: null, used: 0, lastTaskId: 0 };
    const meta = this.sql.exec<{ key: string; value: string }>(`SELECT key, value FROM meta`).toArray();
    const get = (k: string) => meta.find((m) => m.key === k)?.value;
    const config = get("config");
    return {
      config: config ? (JSON.parse(config) as SessionConfig) : null,
      used: Number(get("used") ?? 0),
      lastTaskId: this.sql.exec<{ m: number | null }>(`SELECT MAX(id) AS m FROM tasks`).one().m ?? 0,
    };
  }

  /** Creates the session's storage (the first write this object makes) with its settings. */
  saveConfig(config: SessionConfig): void {
    migrate(this.sql);
    this.sql.exec(`INSERT INTO meta (key, value) VALUES ('config', ?)`, JSON.stringify(config));
  }

  /** Rewrites the settings of a created session (a paid deposit added: session-queue.ts addDeposit). */
  updateConfig(config: SessionConfig): SessionConfig {
    this.sql.exec(`UPDATE meta SET value = ? WHERE key = 'config'`, JSON.stringify(config));
    return config;
  }

  /** Tasks in all, or those `owner` submitted. */
  countTasks(owner?: string): number {
    const where = owner === undefined ? "" : " WHERE owner = ?";
    return this.sql.exec<{ total: number }>(`SELECT COUNT(*) AS total FROM tasks${where}`, ...(owner === undefined ? [] : [owner])).one()
      .total;
  }

  /** Tokens charged for the tasks `owner` submitted. */
  usedBy(owner: string): number {
    return this.sql.exec<{ used: number }>(`SELECT COALESCE(SUM(charged), 0) AS used FROM tasks WHERE owner = ?`, owner).one().used;
  }

  // ── the task path ────────────────────────────────────────────────────────────────────────────────────

  insertTask(
    task: OpenTask,
    request: StoredRequest,
    at: { now: number; block: number; deadlineBlock: number; clientReference: string | null },
  ): void {
    this.sql.exec(
      `INSERT INTO tasks (id, state, request, redundancy, created_at, updated_at, created_block, deadline_at, deadline_block,
         reserved, client_reference, stream, owner)
       VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      task.id,
      JSON.stringify(request),
      task.redundancy,
      at.now,
      at.now,
      at.block,
      task.deadline_at,
      at.deadlineBlock,
      task.reservedTokens,
      at.clientReference,
      task.stream ? 1 : 0,
      task.owner,
    );
  }

  insertReplica(taskId: number, miner: string, now: number, block: number, ackDeadline: number, commitDeadline: number): void {
    this.sql.exec(
      `INSERT OR REPLACE INTO replicas (task_id, miner, state, assigned_at, assigned_block, ack_deadline, commit_deadline)
       VALUES (?, ?, 'assigned', ?, ?, ?, ?)`,
      taskId,
      miner,
      now,
      block,
      ackDeadline,
      commitDeadline,
    );
  }

  setTaskState(taskId: number, state: TaskState, now: number): void {
    this.sql.exec(`UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?`, state, now, taskId);
  }

  recordPrecommit(taskId: number, miner: string, ackedAt: number, now: number, commitment: string, signature: string): void {
    this.sql.exec(
      `UPDATE replicas SET state = 'precommitted', acked_at = ?, precommitted_at = ?, commitment = ?, signature = ? WHERE task_id = ? AND miner = ?`,
      ackedAt,
      now,
      commitment,
      signature,
      taskId,
      miner,
    );
  }

  /**
   * A commit that passed its checks, with its revealed result hash: `committed`, or (`held`) written while its
   * replica stays `precommitted` until the commit-reveal barrier opens (applyHeld); `reason` notes a straggler's.
   */
  recordCommit(
    taskId: number,
    miner: string,
    now: number,
    msg: Commit,
    hash: string,
    opts: { held?: boolean; reason?: string } = {},
  ): void {
    this.sql.exec(
      `UPDATE replicas SET state = ?, committed_at = ?, held_at = ?, hash = ?, text = ?, finish_reason = ?, usage = ?, inference_ms = ?,
         first_token_ms = ?, reason = COALESCE(?, reason) WHERE task_id = ? AND miner = ?`,
      opts.held ? "precommitted" : "committed",
      opts.held ? null : now,
      opts.held ? now : null,
      hash,
      msg.text,
      msg.finish_reason,
      JSON.stringify(msg.usage),
      msg.inference_ms,
      msg.first_token_ms ?? null,
      opts.reason ?? null,
      taskId,
      miner,
    );
    if (msg.result_urn) this.sql.exec(`UPDATE replicas SET result_urn = ? WHERE task_id = ? AND miner = ?`, msg.result_urn, taskId, miner);
  }

  /** The barrier opened: a held commit counts, committed when it arrived. */
  applyHeld(taskId: number, miner: string): void {
    this.sql.exec(
      `UPDATE replicas SET state = 'committed', committed_at = held_at, held_at = NULL WHERE task_id = ? AND miner = ?`,
      taskId,
      miner,
    );
  }

  /** A replica that ended; an in-memory ack is kept on record when it ends before its precommit would have written it. */
  setReplicaState(taskId: number, miner: string, state: ReplicaState, reason: string, ackedAt: number | null): void {
    this.sql.exec(
      `UPDATE replicas SET state = ?, reason = ?, acked_at = COALESCE(acked_at, ?) WHERE task_id = ? AND miner = ?`,
      state,
      reason,
      ackedAt,
      taskId,
      miner,
    );
  }

  /** A verified task's committed token ids (verify-round.ts), kept until the task finishes (clearTokenIds). */
  saveTokenIds(taskId: number, miner: string, ids: { plain?: readonly number[]; sealed?: string }): void {
    const blob = ids.plain ? Uint32Array.from(ids.plain).buffer : null; // little-endian on every Workers host
    this.sql.exec(
      `UPDATE replicas SET token_ids = ?, token_ids_sealed = ? WHERE task_id = ? AND miner = ?`,
      blob,
      ids.sealed ?? null,
      taskId,
      miner,
    );
  }

  clearTokenIds(taskId: number): void {
    this.sql.exec(
      `UPDATE replicas SET token_ids = NULL, token_ids_sealed = NULL WHERE task_id = ? AND (token_ids IS NOT NULL OR token_ids_sealed IS NOT NULL)`,
      taskId,
    );
  }

  /** A replica's failed verification (its evidence), or null once a dispute lifted it. */
  saveVerifyFailed(taskId: number, miner: string, evidence: Replica["verify_failed"] | null): void {
    const json = evidence ? JSON.stringify(evidence) : null;
    this.sql.exec(`UPDATE replicas SET verify_failed = ? WHERE task_id = ? AND miner = ?`, json, taskId, miner);
  }

  /** The committed text of one replica (inline results; "" for off-chain ones). */
  committedText(taskId: number, miner: string): string {
    return (
      this.sql.exec<{ text: string | null }>(`SELECT text FROM replicas WHERE task_id = ? AND miner = ?`, taskId, miner).one().text ?? ""
    );
  }

  /** Whether any replica of the task wrote its result off-chain (such text is not in SQLite). */
  hasOffchainResult(taskId: number): boolean {
    return this.sql.exec(`SELECT 1 FROM replicas WHERE task_id = ? AND result_urn IS NOT NULL LIMIT 1`, taskId).toArray().length > 0;
  }

  /** The chosen replica's result, as the client gets it. */
  resultOf(taskId: number, miner: string): TaskResult {
    const chosen = this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? AND miner = ?`, taskId, miner).one();
    const usage = JSON.parse(chosen.usage!) as { prompt_tokens: number; completion_tokens: number };
    return {
      text: chosen.text!,
      finish_reason: chosen.finish_reason as TaskResult["finish_reason"],
      usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
      hash: chosen.hash!,
      miner,
      inference_ms: chosen.inference_ms ?? 0,
    };
  }

  /** committed → validated → closed happen together; validated_at records the consensus moment. */
  closeTask(taskId: number, now: number, block: number, result: TaskResult, consensus: ConsensusView, used: number): void {
    closeTaskRow(this.sql, taskId, now, block, result, consensus, used);
  }

  updateConsensus(taskId: number, consensus: ConsensusView): void {
    this.sql.exec(`UPDATE tasks SET consensus = ? WHERE id = ?`, JSON.stringify(consensus), taskId);
  }

  failTask(taskId: number, now: number, block: number, code: Failure["code"], message: string): void {
    this.sql.exec(
      `UPDATE tasks SET state = 'failed', updated_at = ?, finished_at = ?, finished_block = ?, error_code = ?, error_message = ? WHERE id = ?`,
      now,
      now,
      block,
      code,
      message,
      taskId,
    );
  }

  /** What a cancelled task is charged (session-queue/cancel.ts), added to the session's usage `used`: the new usage. */
  chargeTask(taskId: number, charged: number, used: number): number {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('used', ?)`, String(used + charged));
    this.sql.exec(`UPDATE tasks SET charged = ? WHERE id = ?`, charged, taskId);
    return used + charged;
  }

  // ── after an eviction ────────────────────────────────────────────────────────────────────────────────

  /**
   * Open tasks, and closed ones whose stragglers are still live (they are judged when they report), oldest first,
   * rebuilt in memory. Acks were never written, so a replica that had acked reads `assigned` again; the streaming
   * client did not survive the eviction, so nothing streams.
   */
  unfinished(session: { id: string; model: string }): { task: OpenTask; consensus: ConsensusView | null }[] {
    const rows = this.sql
      .exec<TaskRow>(
        `SELECT * FROM tasks WHERE kind IS NULL AND (state NOT IN ('closed','failed')
           OR (state = 'closed' AND id IN (SELECT task_id FROM replicas WHERE state IN ('assigned','acked','precommitted'))))
         ORDER BY id`,
      )
      .toArray();
    return rows.map((row) => {
      const request = JSON.parse(row.request) as StoredRequest;
      const task: OpenTask = {
        id: row.id,
        owner: row.owner ?? "",
        state: row.state,
        redundancy: row.redundancy,
        deadline_at: row.deadline_at,
        reservedTokens: row.reserved,
        promptBytes: taskPromptBytes(request.input, request.payload),
        stream: false,
        assign: {
          type: "assign",
          session_id: session.id,
          task_id: String(row.id),
          model: session.model,
          input: request.input,
          params: request.params,
          stream: false,
          ...(request.payload ? { payload: request.payload } : {}),
        },
        precommit_ms: row.deadline_at - row.created_at,
        replicas: new Map(),
        independentSeeds: request.independent_seeds === true,
        ...(request.verify_validators ? { verifyValidators: request.verify_validators } : {}),
      };
      for (const r of this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ?`, row.id))
        task.replicas.set(r.miner, restored(r));
      return { task, consensus: row.consensus ? (JSON.parse(row.consensus) as ConsensusView) : null };
    });
  }

  // ── what clients read ────────────────────────────────────────────────────────────────────────────────

  task(id: number): TaskRow | undefined {
    return this.sql.exec<TaskRow>(`SELECT * FROM tasks WHERE id = ?`, id).toArray()[0];
  }

  /** The newest tasks before `before`: all of them, or those `owner` submitted. */
  tasks(limit: number, before?: number, owner?: string): TaskRow[] {
    const upTo = before ?? Number.MAX_SAFE_INTEGER;
    if (owner === undefined) {
      return this.sql.exec<TaskRow>(`SELECT * FROM tasks WHERE id < ? ORDER BY id DESC LIMIT ?`, upTo, limit).toArray();
    }
    return this.sql.exec<TaskRow>(`SELECT * FROM tasks WHERE owner = ? AND id < ? ORDER BY id DESC LIMIT ?`, owner, upTo, limit).toArray();
  }

  /**
   * A task as clients see it; an open task's newest phases may be in memory only (acks) and are laid over storage.
   * While a task runs its view is sealed: no text, result hash, commitment, signature or result URN of any
   * replica — a replacement may still join it, and nothing revealed may reach a miner before it precommitted
   * (session-queue/barrier.ts). Phases, miners and timings show; the rest once the task is closed or failed.
   */
  view(row: TaskRow, session: { id: string; model: string }, open?: OpenTask, full = false): TaskView {
    if (row.kind === "embedding") return embeddingView(this.sql, row, session, full); // `full`: with its vectors
    const sealed = open !== undefined;
    const request = JSON.parse(row.request) as StoredRequest;
    const replicas = this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? ORDER BY assigned_at`, row.id).toArray();
    if (open) {
      row = { ...row, state: open.state };
      for (const r of replicas) {
        const live = open.replicas.get(r.miner);
        if (live) Object.assign(r, { state: live.state, acked_at: live.acked_at ?? r.acked_at });
      }
    }
    const consensus = row.consensus ? (JSON.parse(row.consensus) as ConsensusView) : null;
    const committed = sealed ? [] : replicas.filter((r) => r.state === "committed");
    return {
      task_id: String(row.id),
      session_id: session.id,
      status: row.state,
      model: session.model,
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
        hash: sealed ? null : r.hash,
        commitment: sealed ? null : r.commitment,
        signature: sealed ? null : r.signature,
        latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null,
        inference_ms: r.inference_ms,
        first_token_ms: r.first_token_ms,
        result_urn: sealed ? null : (r.result_urn ?? null),
        agreed: consensus && r.state === "committed" ? consensus.agreed.includes(r.miner) : null,
        reason: r.reason,
      })),
      error: row.error_code ? { code: row.error_code as Failure["code"], message: row.error_message ?? "" } : null,
    };
  }
}

/** A replica as an evicted queue rebuilds it: its commitment, and a commit held at the barrier or applied. */
function restored(r: ReplicaRow): Replica {
  const held = r.state === "precommitted" && r.held_at !== null;
  const revealed = r.state === "committed" || held;
  return {
    miner: r.miner,
    state: r.state,
    assigned_at: r.assigned_at,
    ack_deadline: r.ack_deadline,
    commit_deadline: r.commit_deadline,
    acked_at: r.acked_at,
    commitment: (r.commitment as Hex | null) ?? null,
    hash: r.state === "committed" ? ((r.hash as Hex | null) ?? null) : null,
    streamed: "",
    ...(revealed && r.usage ? { usage: JSON.parse(r.usage) as Replica["usage"] } : {}),
    ...(held ? { held: { msg: commitOf(r), at: r.held_at!, hash: r.hash as Hex } } : {}),
    ...(revealed && r.token_ids ? { token_ids: [...new Uint32Array(r.token_ids)] } : {}),
    ...(revealed && r.token_ids_sealed ? { token_ids_sealed: r.token_ids_sealed } : {}),
    ...(r.verify_failed ? { verify_failed: JSON.parse(r.verify_failed) as Replica["verify_failed"] } : {}),
  };
}

/** The commit message a replica row keeps. */
function commitOf(r: ReplicaRow): Commit {
  return {
    type: "commit",
    task_id: String(r.task_id),
    text: r.text ?? "",
    finish_reason: (r.finish_reason ?? "stop") as Commit["finish_reason"],
    usage: JSON.parse(r.usage ?? '{"prompt_tokens":0,"completion_tokens":0}') as Commit["usage"],
    inference_ms: r.inference_ms ?? 0,
    ...(r.first_token_ms !== null ? { first_token_ms: r.first_token_ms } : {}),
    ...(r.result_urn ? { result_urn: r.result_urn } : {}),
  };
}
