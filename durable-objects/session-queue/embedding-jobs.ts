import type { Failure } from "../../shared/errors.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { resultHash } from "../../shared/signing.ts";
import type { ReplicaState } from "../../shared/task-state.ts";
import type { ConsensusView, SessionConfig, TaskResult } from "../../shared/views.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import type { Outcome, ReplicaOutcome } from "../reputation.ts";
import { wellFormed } from "../similarity.ts";
import { ownerFailure } from "./admission.ts";
import { cancelAnswer } from "./cancel.ts";
import { EMBEDDING_TOLERANCE, type EmbeddingJudgement, embeddingTokens, judgeEmbeddings } from "./embedding-consensus.ts";
import type { EmbedOutcome, EmbedRequest } from "./embedding-rpc.ts";

export type { EmbedOutcome, EmbedRequest } from "./embedding-rpc.ts";

import { EmbeddingStore, type StoredJob } from "./embedding-store.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { QueueParts } from "./parts.ts";
import { quorumOf } from "./quorum.ts";
import type { TaskRead } from "./reads.ts";
import type { SimilarityRounds } from "./similarity-round.ts";

// Embedding jobs (POST /api/v1/embeddings): a job's texts go to k distinct connected miners serving the embedding
// model (k = the session's redundancy, capped by max_miners) in the `embed` message validators already answer;
// each answers `embeddings` or `embed_failed`. Honest vectors agree to float noise, so the job waits for every
// miner asked (each within its own deadline; a silent, failed or departed one is replaced while the job's deadline
// allows), takes the medoid answer and calls every answer beyond EMBEDDING_TOLERANCE of it an outlier
// (embedding-consensus.ts). A quorum of the k slots must agree, else 409 no_consensus (or the medoid, flagged,
// under best_effort). Rows first, memory after (embedding-store.ts): an evicted queue restores its open jobs and
// asks again only the miners that had not answered.

/** An asked miner's window: the session's ack window, a grace for loading the model, and a little per text. */
const ASK_GRACE_MS = 3_000;
const ASK_MS_PER_TEXT = 100;

interface Asked {
  miner: string;
  state: ReplicaState;
  asked_at: number;
  deadline: number;
  vectors?: number[][];
  hash?: string;
  answered_at?: number;
  reason?: string;
}

interface Job {
  id: number;
  owner: string;
  model: string;
  texts: string[];
  tokens: number;
  redundancy: number;
  deadline_at: number;
  bestEffort: boolean;
  replicas: Map<string, Asked>;
}

/** What the jobs reach of their SessionQueue beyond the common parts. */
export interface EmbeddingHost {
  /** Deposit tokens the session has used (charged). */
  used(): number;
  setUsed(used: number): void;
  unbenched(): MinerSocket[];
  /** Whether the pool has miners for `model` that may yet join (asked only when none is connected). */
  poolServes(model: string): Promise<boolean>;
}

type Answer = Extract<SessionMinerMessage, { type: "embeddings" | "embed_failed" }>;

export class EmbeddingJobs {
  private readonly jobs = new Map<number, Job>();
  private readonly waiting = new Map<number, (o: EmbedOutcome) => void>();
  private readonly store: EmbeddingStore;
  private readonly parts: QueueParts;
  private readonly host: EmbeddingHost;
  /** The queue's open tasks: jobs take their ids from it and hold their tokens in its reservation. */
  private readonly open: OpenTasks;

  constructor(parts: QueueParts, sql: SqlStorage, open: OpenTasks, host: EmbeddingHost) {
    this.parts = parts;
    this.store = new EmbeddingStore(sql);
    this.open = open;
    this.host = host;
  }

  has(taskId: number): boolean {
    return this.jobs.has(taskId);
  }

  get size(): number {
    return this.jobs.size;
  }

  /** Takes a job and answers once it is judged (or failed). */
  async submit(req: EmbedRequest): Promise<EmbedOutcome> {
    const cfg = this.parts.config();
    const model = req.model ?? cfg.embedding_model;
    const modelRefused = this.modelFailure(cfg, req, model);
    if (modelRefused) return { ok: false, error: modelRefused };
    if (this.eligible(model).length === 0 && !(await this.host.poolServes(model))) {
      const message = `no miner serves embedding model ${model} (none is connected, or every one is benched)`;
      return { ok: false, error: { code: "no_miner_available", message, details: { model } } };
    }
    // Checked after the await: the deposit may have been drawn on meanwhile.
    const refused = this.depositFailure(cfg, req.texts);
    if (refused) return { ok: false, error: refused };
    const now = Date.now();
    const job = this.create(cfg, req, model, now);
    const done = new Promise<EmbedOutcome>((resolve) => this.waiting.set(job.id, resolve));
    this.parts.armAlarm(job.deadline_at);
    this.advance(job, now);
    return done;
  }

  /** A miner's `embeddings` or `embed_failed`: for a job, else for a similarity round (validators use the same messages). */
  onAnswer(ws: WebSocket, miner: string, msg: Answer, rounds: Pick<SimilarityRounds, "onAnswer">): void {
    const job = this.jobs.get(Number(msg.task_id));
    if (!job) return rounds.onAnswer(ws, miner, msg);
    const r = job.replicas.get(miner);
    if (!r) {
      const message = "no embedding job of this id was asked of this miner";
      return this.parts.sockets.send(ws, { type: "error", code: "unknown_task", message, task_id: msg.task_id });
    }
    if (r.state !== "assigned") return; // answered already (a re-sent ask after an eviction), or too late
    const now = Date.now();
    if (msg.type === "embed_failed") return this.end(job, r, "released", `could not embed: ${msg.reason}`, now);
    if (msg.model !== job.model || !wellFormed(msg.vectors, job.texts.length)) {
      return this.end(job, r, "rejected", `malformed embeddings (model ${msg.model}, ${msg.vectors.length} vectors)`, now);
    }
    const hash = resultHash(JSON.stringify(msg.vectors));
    this.store.recordVectors(job.id, miner, now, msg.vectors, hash, now - r.asked_at);
    Object.assign(r, { state: "committed", vectors: msg.vectors, hash, answered_at: now });
    this.advance(job, now);
  }

  /** The owner cancels its open job: nothing charged, nobody blamed; anything else answers as a finished task's cancel. */
  cancel(read: TaskRead): TaskRead {
    const job = read.ok ? this.jobs.get(Number(read.task.task_id)) : undefined;
    if (!job) return cancelAnswer(read);
    for (const r of job.replicas.values()) if (r.state === "assigned") this.setState(job, r, "cancelled", "the job's owner cancelled it");
    this.fail(job, "task_cancelled", "cancelled by its owner", Date.now());
    return { ok: true, task: this.parts.store.view(this.parts.store.task(job.id)!, this.parts.config(), undefined, true) };
  }

  /** A miner left: what it was asked goes to another. */
  minerGone(miner: string, reason: string): void {
    for (const job of [...this.jobs.values()]) {
      const r = job.replicas.get(miner);
      if (r?.state === "assigned") this.end(job, r, "disconnected", reason, Date.now());
    }
  }

  /** A miner connected (or capacity freed): jobs short of miners ask again. */
  pump(): void {
    for (const job of [...this.jobs.values()]) this.advance(job, Date.now());
  }

  /** Alarm: silent miners past their deadline are replaced; a job at its deadline is judged on what came in. */
  expire(now: number): void {
    for (const job of [...this.jobs.values()]) {
      for (const r of job.replicas.values()) {
        if (r.state === "assigned" && r.deadline <= now) this.setState(job, r, "timed_out", "no embeddings by its deadline");
      }
      if (job.deadline_at <= now) this.final(job, now);
      else this.advance(job, now);
    }
    this.armNext();
  }

  /**
   * After an eviction: open jobs from SQLite, with the answers already in; miners still asked get the job again
   * (over their hibernated sockets) with a fresh window. The queue's reconnect alarm then runs their deadlines.
   */
  restore(now = Date.now()): void {
    for (const stored of this.store.unfinished()) {
      const job = restoredJob(stored);
      this.jobs.set(job.id, job);
      this.open.reservedTokens += job.tokens;
    }
    for (const job of this.jobs.values()) {
      for (const r of job.replicas.values()) {
        const ws = r.state === "assigned" ? this.parts.sockets.socketFor(r.miner) : undefined;
        if (!ws) continue;
        r.deadline = Math.min(job.deadline_at, now + this.window(job));
        this.parts.sockets.send(ws, { type: "embed", task_id: String(job.id), model: job.model, texts: job.texts, deadline: r.deadline });
      }
    }
  }

  // ── the job's course ──────────────────────────────────────────────────────────────────────────────────

  private modelFailure(cfg: SessionConfig, req: EmbedRequest, model: string): Failure | null {
    const owner = ownerFailure(cfg, req.owner);
    if (owner || model === cfg.embedding_model) return owner;
    return {
      code: "invalid_request",
      message: `session ${cfg.id} serves embeddings with ${cfg.embedding_model}, not ${model}`,
      details: [{ path: "model", message: `expected ${cfg.embedding_model}` }],
    };
  }

  private depositFailure(cfg: SessionConfig, texts: string[]): Failure | null {
    const required = embeddingTokens(texts);
    const available = cfg.deposit - this.host.used() - this.open.reservedTokens;
    if (available >= required) return null;
    return {
      code: "deposit_exhausted",
      message: `session ${cfg.id} has ${available} tokens available; this embedding job uses ${required}`,
      details: { deposit: cfg.deposit, available, required },
    };
  }

  /** Writes the job (`queued`), then holds its tokens. */
  private create(cfg: SessionConfig, req: EmbedRequest, model: string, now: number): Job {
    const job: Job = {
      id: this.open.newId(),
      owner: req.owner,
      model,
      texts: req.texts,
      tokens: embeddingTokens(req.texts),
      redundancy: Math.max(1, Math.min(cfg.redundancy, req.max_miners ?? cfg.redundancy)),
      deadline_at: now + Math.round((req.timeout_s ?? cfg.task_timeout) * 1000),
      bestEffort: cfg.best_effort === true,
      replicas: new Map(),
    };
    const request = { model, texts: job.texts, tokens: job.tokens, best_effort: job.bestEffort };
    this.store.insertJob(job, request, { now, block: this.parts.block(now), deadlineBlock: this.parts.block(job.deadline_at) });
    this.jobs.set(job.id, job);
    this.open.reservedTokens += job.tokens;
    return job;
  }

  /**
   * Fills the job's empty slots, then judges it once nobody asked is still working: at once with a quorum of
   * answers, else at its deadline (a miner may still join); a verdict without a quorum recruits another miner.
   */
  private advance(job: Job, now: number): void {
    if (!this.jobs.has(job.id)) return;
    const answered = this.answered(job);
    const live = [...job.replicas.values()].filter((r) => r.state === "assigned").length;
    const short = job.redundancy - answered.length - live;
    if (short > 0 && this.ask(job, short, now) > 0) return;
    if (live > 0 || answered.length < quorumOf(job.redundancy)) return;
    this.judge(job, answered, now, false);
  }

  private judge(job: Job, answered: Asked[], now: number, final: boolean): void {
    const j = judgeEmbeddings(
      answered.map((r) => r.vectors!),
      EMBEDDING_TOLERANCE,
    );
    if (j.agreed.length >= quorumOf(job.redundancy)) return this.close(job, answered, j, now);
    if (!final && this.ask(job, 1, now) > 0) return; // one more miner may make a quorum
    if (job.bestEffort) return this.close(job, answered, j, now);
    this.fail(job, "no_consensus", `${j.agreed.length} of ${answered.length} answers agree; a quorum is ${quorumOf(job.redundancy)}`, now);
  }

  /** The job's deadline: silent miners timed out, what came in is judged (nothing: `timeout`). */
  private final(job: Job, now: number): void {
    for (const r of job.replicas.values())
      if (r.state === "assigned") this.setState(job, r, "timed_out", "no embeddings by the job's deadline");
    const answered = this.answered(job);
    if (answered.length === 0) return this.fail(job, "timeout", "no miner answered the embedding job before its deadline", now);
    this.judge(job, answered, now, true);
  }

  /** Records the verdict, charges the job's tokens and answers the client with the medoid's vectors. */
  private close(job: Job, answered: Asked[], j: EmbeddingJudgement, now: number): void {
    const quorum = quorumOf(job.redundancy);
    const chosen = answered[j.medoid];
    const agreed = j.agreed.length >= quorum;
    const round6 = (x: number) => Math.round(x * 1e6) / 1e6;
    const consensus: ConsensusView = {
      method: "embedding",
      status: agreed ? "agreed" : "no_quorum",
      quorum,
      hash: chosen.hash!,
      agreed: j.agreed.map((i) => answered[i].miner),
      outliers: j.outliers.map((i) => answered[i].miner),
      embedding: {
        model: job.model,
        tolerance: EMBEDDING_TOLERANCE,
        distances: Object.fromEntries(answered.map((r, i) => [r.miner, round6(j.distances[i])])),
      },
      ...(agreed ? {} : { best_effort: true as const }),
    };
    const usage = { prompt_tokens: job.tokens, completion_tokens: 0, total_tokens: job.tokens };
    const inference_ms = (chosen.answered_at ?? now) - chosen.asked_at;
    const result: TaskResult = { text: "", finish_reason: "stop", usage, hash: chosen.hash!, miner: chosen.miner, inference_ms };
    const used = this.host.used() + job.tokens;
    this.store.closeJob(job.id, now, this.parts.block(now), result, consensus, used);
    this.host.setUsed(used);
    this.parts.outcomes.push(this.outcomes(job, consensus, now));
    this.finish(job);
  }

  private fail(job: Job, code: Failure["code"], message: string, now: number): void {
    this.parts.store.failTask(job.id, now, this.parts.block(now), code, message);
    this.parts.outcomes.push(this.outcomes(job, null, now));
    this.finish(job);
  }

  /** Gives the job's tokens back and answers whoever waits (nobody, after an eviction: the view keeps the result). */
  private finish(job: Job): void {
    this.jobs.delete(job.id);
    this.open.reservedTokens -= job.tokens;
    const resolve = this.waiting.get(job.id);
    this.waiting.delete(job.id);
    if (!resolve) return;
    const task = this.parts.store.view(this.parts.store.task(job.id)!, this.parts.config(), undefined, true);
    resolve(task.status === "closed" ? { ok: true, task } : { ok: false, error: task.error!, task });
  }

  // ── miners ───────────────────────────────────────────────────────────────────────────────────────────

  /** Connected, unbenched miners that serve `model`. */
  private eligible(model: string): MinerSocket[] {
    return this.host.unbenched().filter((m) => m.claims.models.includes(model));
  }

  /** Sends `embed` to up to `count` eligible miners not yet in the job, the least loaded first; how many were asked. */
  private ask(job: Job, count: number, now: number): number {
    if (now >= job.deadline_at) return 0;
    const picked = this.eligible(job.model)
      .filter((m) => !job.replicas.has(m.claims.address))
      .sort((a, b) => this.parts.load.ratio(a) - this.parts.load.ratio(b))
      .slice(0, count);
    for (const m of picked) {
      const miner = m.claims.address;
      const deadline = Math.min(job.deadline_at, now + this.window(job));
      if (job.replicas.size === 0) this.store.setJobState(job.id, "assigned", now);
      this.parts.store.insertReplica(job.id, miner, now, this.parts.block(now), deadline, deadline);
      job.replicas.set(miner, { miner, state: "assigned", asked_at: now, deadline });
      this.parts.sockets.send(m.ws, { type: "embed", task_id: String(job.id), model: job.model, texts: job.texts, deadline });
      this.parts.armAlarm(deadline);
    }
    return picked.length;
  }

  private window(job: Job): number {
    return this.parts.config().ack_timeout * 1000 + ASK_GRACE_MS + ASK_MS_PER_TEXT * job.texts.length;
  }

  /** Ends an asked miner's part (written, then in memory) and moves the job on. */
  private end(job: Job, r: Asked, state: ReplicaState, reason: string, now: number): void {
    this.setState(job, r, state, reason);
    this.advance(job, now);
  }

  private setState(job: Job, r: Asked, state: ReplicaState, reason: string): void {
    this.parts.store.setReplicaState(job.id, r.miner, state, reason, null);
    r.state = state;
    r.reason = reason;
  }

  private answered(job: Job): Asked[] {
    return [...job.replicas.values()].filter((r) => r.state === "committed");
  }

  private armNext(): void {
    for (const job of this.jobs.values()) {
      this.parts.armAlarm(job.deadline_at);
      for (const r of job.replicas.values()) if (r.state === "assigned") this.parts.armAlarm(r.deadline);
    }
  }

  /** Each asked miner's ledger outcome: agreeing answers share the job's tokens, outliers and the silent are penalised. */
  private outcomes(job: Job, consensus: ConsensusView | null, now: number): ReplicaOutcome[] {
    const agreed = new Set(consensus?.status === "agreed" ? consensus.agreed : []);
    const share = agreed.size ? Math.floor(job.tokens / agreed.size) : 0;
    const out: ReplicaOutcome[] = [];
    for (const r of job.replicas.values()) {
      let outcome: Outcome | null = null;
      let reason = r.reason ?? null;
      if (r.state === "committed") {
        if (consensus?.status === "agreed") outcome = agreed.has(r.miner) ? "agreed" : "outlier";
        if (outcome === "outlier")
          reason = `embeddings ${consensus!.embedding!.distances[r.miner]} from the consensus (tolerance ${EMBEDDING_TOLERANCE})`;
      } else if (r.state === "rejected" || r.state === "timed_out" || r.state === "disconnected" || r.state === "released") {
        outcome = r.state;
      }
      if (!outcome) continue;
      const latency_ms = r.answered_at ? r.answered_at - r.asked_at : null;
      const base = { miner: r.miner, session_id: this.parts.config().id, task_id: String(job.id), owner: job.owner || null };
      out.push({ ...base, outcome, reason, latency_ms, reward: outcome === "agreed" ? share : 0, at: now, block: this.parts.block(now) });
    }
    return out;
  }
}

function restoredJob({ row, request, replicas }: StoredJob): Job {
  const job: Job = {
    id: row.id,
    owner: row.owner ?? "",
    model: request.model,
    texts: request.texts,
    tokens: request.tokens,
    redundancy: row.redundancy,
    deadline_at: row.deadline_at,
    bestEffort: request.best_effort,
    replicas: new Map(),
  };
  for (const r of replicas) {
    const answered = r.state === "committed" && r.text !== null;
    job.replicas.set(r.miner, {
      miner: r.miner,
      state: r.state,
      asked_at: r.assigned_at,
      deadline: r.ack_deadline,
      ...(answered ? { vectors: JSON.parse(r.text!) as number[][], hash: r.hash!, answered_at: r.committed_at ?? r.assigned_at } : {}),
      ...(r.reason ? { reason: r.reason } : {}),
    });
  }
  return job;
}
