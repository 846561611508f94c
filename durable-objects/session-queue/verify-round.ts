import type { VerifyOption } from "../../shared/generation.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import type { ConsensusView, VerificationEvidence } from "../../shared/views.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import type { QueueParts } from "./parts.ts";
import { type OpenTask, type Replica, replicaSeed } from "./task.ts";
import { eligibleValidators } from "./validators.ts";
import { type Judged, judgeAnswer, spotDetection, spotPositions } from "./verify-judge.ts";

// Verified sampling (session consensus `verify`, or a request's `verify` option). Once a task's verdict would
// close it (the commit-reveal barrier is open, a quorum agrees: k may be 1), the chosen replica's completion is
// sent, as token ids, to validators: miners serving the session's model that are not in the task at all (chosen as
// similarity validators are: validators.ts, the least loaded first, never a benched one). Each re-scores prompt +
// completion in one forward pass and re-runs the seeded sampler at every position, or at a random share of them
// drawn here, after the commit (spot check). A replica they fail is an outlier with the failing positions as
// evidence, and the task goes to another miner while its deadline allows; a replica they pass closes the task.
// Fallbacks, each said in `consensus.note`: a private task (its token ids would reveal the text: no replica
// sends them), constrained decoding, token ids lost in an eviction, no validator outside the task, no answer.

/** How long a validator has to answer (the first call may load the model; a forward pass takes milliseconds). */
export const VERIFY_TIMEOUT_MS = 15_000;

type Answer = Extract<SessionMinerMessage, { type: "verification" | "verify_failed" }>;

interface Round {
  /** The replica verified (the verdict's chosen one) and the verdict its pass closes the task with. */
  miner: string;
  consensus: ConsensusView;
  fraction: number;
  positions?: number[];
  asked: Map<string, number>;
  judged: Map<string, Judged>;
  tried: Set<string>;
  wanted: number;
}

/** What a round needs of its SessionQueue. */
export interface VerifyHost {
  openTask(id: number): OpenTask | undefined;
  /** Closes the task with this verdict (its quorum was checked before verification started). */
  close(task: OpenTask, chosen: string, consensus: ConsensusView, now: number): void;
  /** A replica failed and no longer counts: its row gets the reason; the task is queued for another miner and judged again. */
  retry(task: OpenTask, r: Replica, reason: string): void;
}

/** The verification a task asks for: its own option, else the session's `verify` consensus (every position). */
export function verifyOptionOf(task: OpenTask, consensus: string): VerifyOption | null {
  return task.assign.params.verify ?? (consensus === "verify" ? { fraction: 1 } : null);
}

/**
 * A verified task's commit must carry its token ids (not a private one's), as many as the completion tokens it
 * claims: the router checks the count itself, so inflated completion usage never reaches a validator.
 */
export function commitFault(task: OpenTask, consensus: string, msg: Extract<SessionMinerMessage, { type: "commit" }>): string | null {
  if (!verifyOptionOf(task, consensus) || task.assign.payload?.encrypted || task.assign.params.constraint) return null;
  if (!msg.token_ids) return "verified task: the commit carries no token ids";
  if (msg.token_ids.length !== msg.usage.completion_tokens)
    return `usage claims ${msg.usage.completion_tokens} completion tokens; the commit carries ${msg.token_ids.length} token ids`;
  return null;
}

export class VerifyRounds {
  private readonly rounds = new Map<number, Round>();
  /** Replicas of open tasks that failed verification: the evidence the final verdict carries. */
  private readonly failed = new Map<number, VerificationEvidence["failed"]>();
  private readonly parts: QueueParts;
  private readonly host: VerifyHost;

  constructor(parts: QueueParts, host: VerifyHost) {
    this.parts = parts;
    this.host = host;
  }

  has(taskId: number): boolean {
    return this.rounds.has(taskId);
  }

  /** The task finished: its round (if any) and its evidence go. */
  drop(taskId: number): void {
    this.rounds.delete(taskId);
    this.failed.delete(taskId);
  }

  *deadlines(): Iterable<number> {
    for (const r of this.rounds.values()) yield* r.asked.values();
  }

  /** SessionQueue.holdsTask: a validator asked to verify the task reads its off-chain prompt as a replica does. */
  holding<T extends { held: boolean }>(held: T, taskId: string, miner: string): T {
    return !held.held && this.rounds.get(Number(taskId))?.tried.has(miner.toLowerCase()) ? { ...held, held: true } : held;
  }

  /** A checked commit: why a verified task must reject it (commitFault), else its token ids are kept. */
  onCommit(task: OpenTask, r: Replica, msg: Extract<SessionMinerMessage, { type: "commit" }>): string | null {
    const fault = commitFault(task, this.parts.config().consensus, msg);
    if (!fault && msg.token_ids) r.token_ids = msg.token_ids;
    return fault;
  }

  /**
   * A verdict about to close its task: a verified task's chosen output goes to validators first (true: the round
   * or a fallback, whose note the verdict carries, took it over); false for tasks nobody asked to verify.
   */
  intercept(task: OpenTask, chosen: string, consensus: ConsensusView, now: number): boolean {
    const opt = verifyOptionOf(task, this.parts.config().consensus);
    if (!opt) return false;
    const note = this.start(task, chosen, consensus, opt, now);
    if (note !== null) this.host.close(task, chosen, { ...consensus, note }, now);
    return true;
  }

  /**
   * Starts verifying the chosen replica of a verdict that would close the task; null once validators are asked,
   * else why the task closes unverified (the note its consensus carries).
   */
  start(task: OpenTask, chosen: string, consensus: ConsensusView, opt: VerifyOption, now: number): string | null {
    const r = task.replicas.get(chosen);
    const cfg = this.parts.config();
    if (task.assign.payload?.encrypted) return "private task: its token ids never leave the replica, so it was not verified";
    if (task.assign.params.constraint) return "constrained decoding is not verified";
    if (!r?.token_ids) return "the replica's token ids were lost (the session restarted); not verified";
    const outsiders = this.outsiders(task);
    if (outsiders.length === 0) return `no validator outside the task serves ${cfg.model}; not verified`;
    const n = r.token_ids.length;
    const positions = opt.fraction < 1 ? spotPositions(n, opt.fraction) : undefined;
    const round: Round = {
      miner: chosen,
      consensus,
      fraction: opt.fraction,
      ...(positions ? { positions } : {}),
      asked: new Map(),
      judged: new Map(),
      tried: new Set(),
      wanted: Math.max(1, cfg.validator_count),
    };
    if (this.ask(task, round, round.wanted, now) === 0) return "the task's deadline leaves no time for verification; not verified";
    this.rounds.set(task.id, round);
    return null;
  }

  onAnswer(ws: WebSocket, miner: string, msg: Answer): void {
    const task = this.host.openTask(Number(msg.task_id));
    const round = this.rounds.get(Number(msg.task_id));
    if (!task || !round?.asked.has(miner)) {
      return this.parts.sockets.send(ws, {
        type: "error",
        code: "unknown_task",
        message: "no verification of this task was asked of this miner",
        task_id: msg.task_id,
      });
    }
    round.asked.delete(miner);
    const r = task.replicas.get(round.miner);
    if (msg.type === "verify_failed") {
      console.warn(`session ${this.parts.config().id} task ${task.id}: validator ${miner} could not verify: ${msg.reason}`);
    } else if (r) {
      const judged = judgeAnswer(r, msg, round.positions);
      if (judged) round.judged.set(miner, judged);
      else console.warn(`session ${this.parts.config().id} task ${task.id}: validator ${miner} checked fewer positions than asked`);
    }
    this.continue(task, round, Date.now());
  }

  /** Alarm: validators past their deadline are given up on. */
  expire(now: number): void {
    for (const [id, round] of [...this.rounds]) {
      for (const [miner, deadline] of [...round.asked]) if (deadline <= now) round.asked.delete(miner);
      const task = this.host.openTask(id);
      if (task) this.continue(task, round, now);
    }
  }

  private outsiders(task: OpenTask): MinerSocket[] {
    const cfg = this.parts.config();
    return eligibleValidators(task, this.parts.sockets.connected(), cfg.model, (a) => this.parts.load.benched(a)).outsiders;
  }

  /** Sends `verify` to up to `count` untried outsiders, the least loaded first. */
  private ask(task: OpenTask, round: Round, count: number, now: number): number {
    const deadline = Math.min(task.deadline_at, now + VERIFY_TIMEOUT_MS);
    const r = task.replicas.get(round.miner);
    if (deadline <= now || !r?.token_ids) return 0;
    const picked = this.outsiders(task)
      .filter((m) => !round.tried.has(m.claims.address))
      .sort((a, b) => this.parts.load.ratio(a) - this.parts.load.ratio(b))
      .slice(0, count);
    const cfg = this.parts.config();
    const { input, params, payload } = task.assign;
    for (const m of picked) {
      round.tried.add(m.claims.address);
      round.asked.set(m.claims.address, deadline);
      this.parts.sockets.send(m.ws, {
        type: "verify",
        session_id: cfg.id,
        task_id: String(task.id),
        model: cfg.model,
        input,
        // The replica's own seed where replicas sample independently (a similarity session): what it drew from.
        params: task.independentSeeds ? { ...params, seed: replicaSeed(params.seed, r.miner) } : params,
        ...(payload ? { payload } : {}),
        token_ids: r.token_ids,
        finish_reason: this.parts.store.resultOf(task.id, r.miner).finish_reason,
        ...(round.positions ? { positions: round.positions } : {}),
        deadline,
      });
    }
    if (picked.length > 0) this.parts.armAlarm(deadline);
    return picked.length;
  }

  /**
   * Once every asked validator answered or timed out: more validators while too few answered; a lone accusation
   * (or a tie) is put to one more validator when one exists; then the majority decides (a tie passes).
   */
  private continue(task: OpenTask, round: Round, now: number): void {
    if (round.asked.size > 0) return;
    const votes = [...round.judged.values()];
    const fails = votes.filter((v) => !v.ok).length;
    const passes = votes.length - fails;
    if (votes.length < round.wanted && this.ask(task, round, round.wanted - votes.length, now) > 0) return;
    if (fails === 1 && passes === 0 && this.ask(task, round, 1, now) > 0) return;
    if (fails > 0 && fails === passes && this.ask(task, round, 1, now) > 0) return;
    this.rounds.delete(task.id);
    const r = task.replicas.get(round.miner);
    if (!r) return;
    if (votes.length === 0) {
      const note = "no validator answered in time; not verified";
      return this.host.close(task, round.miner, { ...round.consensus, note }, now);
    }
    if (fails > passes) return this.fail(task, r, votes);
    this.host.close(task, round.miner, this.passed(task, round, votes), now);
  }

  private fail(task: OpenTask, r: Replica, votes: Judged[]): void {
    const worst = votes.filter((v) => !v.ok).sort((a, b) => b.count - a.count)[0];
    const failed = this.failed.get(task.id) ?? {};
    failed[r.miner] = { positions: worst.positions, count: worst.count, reason: worst.reason };
    this.failed.set(task.id, failed);
    // An outlier (outcomes.ts) that no longer counts (task.ts countingReplicas); its row says why.
    r.verify_failed = true;
    task.recruitingAt = undefined;
    this.host.retry(task, r, `verification failed: ${worst.reason}`);
  }

  private passed(task: OpenTask, round: Round, votes: Judged[]): ConsensusView {
    const ok = votes.filter((v) => v.ok);
    const failed = this.failed.get(task.id) ?? {};
    const margins = ok.map((v) => v.minMargin).filter((m): m is number => m !== null);
    const tokens = task.replicas.get(round.miner)?.token_ids?.length ?? 0;
    const checked = ok[0]?.checked ?? 0;
    const verification: VerificationEvidence = {
      fraction: round.fraction,
      validators: [...round.judged.entries()].filter(([, v]) => v.ok).map(([m]) => m),
      checked,
      tokens,
      detection: spotDetection(tokens, checked),
      near_ties: Math.max(0, ...ok.map((v) => v.nearTies)),
      min_margin: margins.length ? Math.min(...margins) : null,
      failed,
    };
    const outliers = [...new Set([...round.consensus.outliers, ...Object.keys(failed)])];
    return { ...round.consensus, method: "verify", outliers, verification };
  }
}
