import type { VerifyOption } from "../../shared/generation.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import type { ConsensusView, VerificationEvidence } from "../../shared/views.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import type { QueueParts } from "./parts.ts";
import { type OpenTask, type Replica, replicaSeed, type VerifyFailed } from "./task.ts";
import { eligibleValidators } from "./validators.ts";
import { disputedBy, disputeVerdict, failedEvidence } from "./verify-dispute.ts";
import { type Judged, judgeAnswer, spotDetection, spotPositions } from "./verify-judge.ts";

// Verified sampling (session consensus `verify`, or a request's `verify` option). Once a task's verdict would
// close it (the commit-reveal barrier is open, a quorum agrees: k may be 1), the chosen replica's completion is
// sent, as token ids, to validators: miners serving the session's model that are not in the task at all (chosen as
// similarity validators are: validators.ts, the least loaded first, never a benched one). Each re-scores prompt +
// completion in one forward pass and re-runs the seeded sampler at every position, or at a random share of them
// drawn here, after the commit (spot check). A replica they fail is an outlier with the failing positions as
// evidence, and the task goes to another miner while its deadline allows; a replica they pass closes the task.
// The token ids and a failed replica's evidence are written with the replica (task-store.ts), so a round cut by an
// eviction starts again on the restored queue. A falsely failed honest output would fail again on the next miner
// (same seed): when the next replica's ids are identical and it never saw them, the accusation is disputed
// instead (verify-dispute.ts).
// A private task is verified only by miners its owner allowlisted for its key (the list its submit carried:
// task.ts verifyValidators); its replica seals the ids under the task key (the router would read the text in plain
// ids), and the validators open them as they open its prompt and check their count themselves.
// Fallbacks, each said in `consensus.note`: a private task with no allowlisted validator (no replica sends ids),
// constrained decoding, no validator outside the task (for a private task: none allowlisted). Validators that
// were asked but never answer by the task's deadline fail it (504 timeout): no unchecked output is returned.

/**
 * How long a validator has to answer before another is asked (the first call may load the model; a forward pass
 * takes milliseconds). VERIFY_TIMEOUT_MS overrides it. With nobody else to ask, a late answer still counts until the
 * task's own deadline: busy validators must not let a replica's output through unverified.
 */
export const VERIFY_TIMEOUT_MS = 15_000;

type Answer = Extract<SessionMinerMessage, { type: "verification" | "verify_failed" }>;

interface Round {
  /** The replica verified (the verdict's chosen one) and the verdict its pass closes the task with. */
  miner: string;
  consensus: ConsensusView;
  fraction: number;
  positions?: number[];
  asked: Map<string, number>;
  /** Validators past their answer time: their answer still counts while the round is open. */
  late: Set<string>;
  /** Nothing judged and nobody left to ask: waiting for a late answer until the task's deadline. */
  waitUntil?: number;
  judged: Map<string, Judged>;
  tried: Set<string>;
  wanted: number;
  /** A dispute (verify-dispute.ts): the failed replicas whose output this one reproduced exactly. */
  accused?: Replica[];
}

/** What a round needs of its SessionQueue. */
export interface VerifyHost {
  openTask(id: number): OpenTask | undefined;
  /** Closes the task with this verdict (its quorum was checked before verification started). */
  close(task: OpenTask, chosen: string, consensus: ConsensusView, now: number): void;
  /** A replica failed and no longer counts: its row gets the reason; the task is queued for another miner and judged again. */
  retry(task: OpenTask, r: Replica, reason: string): void;
  /** Fails the task with this error (nobody's fault: no replica is blamed). */
  fail(task: OpenTask, code: "timeout", message: string, now: number): void;
}

/** The verification a task asks for: its own option, else the session's `verify` consensus (every position). */
export function verifyOptionOf(task: OpenTask, consensus: string): VerifyOption | null {
  return task.assign.params.verify ?? (consensus === "verify" ? { fraction: 1 } : null);
}

/**
 * A verified task's commit must carry its token ids, as many as the completion tokens it claims: the router checks
 * the count itself, so inflated completion usage never reaches a validator. A private task with allowlisted
 * validators carries them sealed under the task key instead (the validators check the count); without any, it is
 * not verified and carries none.
 */
export function commitFault(task: OpenTask, consensus: string, msg: Extract<SessionMinerMessage, { type: "commit" }>): string | null {
  if (!verifyOptionOf(task, consensus) || task.assign.params.constraint) return null;
  if (task.assign.payload?.encrypted) {
    return task.verifyValidators?.length && !msg.token_ids_sealed ? "verified private task: the commit carries no sealed token ids" : null;
  }
  if (!msg.token_ids) return "verified task: the commit carries no token ids";
  if (msg.token_ids.length !== msg.usage.completion_tokens)
    return `usage claims ${msg.usage.completion_tokens} completion tokens; the commit carries ${msg.token_ids.length} token ids`;
  return null;
}

export class VerifyRounds {
  private readonly rounds = new Map<number, Round>();
  /** Open tasks with token ids in SQLite (cleared when they finish; a restored task is added when verified). */
  private readonly stored = new Set<number>();
  private readonly parts: QueueParts;
  private readonly host: VerifyHost;

  private readonly timeoutMs: number;

  constructor(parts: QueueParts, host: VerifyHost, timeoutMs = VERIFY_TIMEOUT_MS) {
    this.parts = parts;
    this.host = host;
    this.timeoutMs = timeoutMs;
  }

  has(taskId: number): boolean {
    return this.rounds.has(taskId);
  }

  /** The task finished: its round (if any) and its stored token ids go. */
  drop(taskId: number): void {
    this.rounds.delete(taskId);
    if (this.stored.delete(taskId)) this.parts.store.clearTokenIds(taskId);
  }

  *deadlines(): Iterable<number> {
    for (const r of this.rounds.values()) {
      yield* r.asked.values();
      if (r.waitUntil !== undefined) yield r.waitUntil;
    }
  }

  /** SessionQueue.holdsTask: a validator asked to verify the task reads its off-chain prompt as a replica does. */
  holding<T extends { held: boolean }>(held: T, taskId: string, miner: string): T {
    return !held.held && this.rounds.get(Number(taskId))?.tried.has(miner.toLowerCase()) ? { ...held, held: true } : held;
  }

  /** A checked commit: why a verified task must reject it (commitFault), else its token ids are kept. */
  onCommit(task: OpenTask, r: Replica, msg: Extract<SessionMinerMessage, { type: "commit" }>): string | null {
    const fault = commitFault(task, this.parts.config().consensus, msg);
    if (fault || !verifyOptionOf(task, this.parts.config().consensus)) return fault;
    // A private task's plain ids would reveal its text to the router: only sealed ones are kept.
    if (task.assign.payload?.encrypted) {
      if (!msg.token_ids_sealed || !task.verifyValidators?.length) return null;
      r.token_ids_sealed = msg.token_ids_sealed;
      this.parts.store.saveTokenIds(task.id, r.miner, { sealed: msg.token_ids_sealed });
      this.stored.add(task.id);
    } else if (msg.token_ids) {
      r.token_ids = msg.token_ids;
      this.parts.store.saveTokenIds(task.id, r.miner, { plain: msg.token_ids });
      this.stored.add(task.id);
    }
    return null;
  }

  /**
   * A verdict about to close its task: a verified task's chosen output goes to validators first (true: the round
   * or a fallback, whose note the verdict carries, took it over); false for tasks nobody asked to verify.
   */
  intercept(task: OpenTask, chosen: string, consensus: ConsensusView, now: number): boolean {
    const opt = verifyOptionOf(task, this.parts.config().consensus);
    if (!opt) return false;
    this.stored.add(task.id); // restored after an eviction: its ids are in SQLite too
    const r = task.replicas.get(chosen);
    const accused = r ? disputedBy(task, r) : [];
    const note = this.start(task, chosen, consensus, opt, now, accused);
    if (note === null) return true;
    // A reproduced failed output that no fresh validator can settle: the accusation stands for it too.
    if (r && accused.length > 0) this.failAs(task, r, accused[0], note);
    else this.host.close(task, chosen, { ...consensus, note }, now);
    return true;
  }

  /**
   * Starts verifying the chosen replica of a verdict that would close the task; null once validators are asked,
   * else why the task closes unverified (the note its consensus carries).
   */
  start(task: OpenTask, chosen: string, consensus: ConsensusView, opt: VerifyOption, now: number, accused: Replica[] = []): string | null {
    const r = task.replicas.get(chosen);
    const cfg = this.parts.config();
    const sealed = !!task.assign.payload?.encrypted;
    if (sealed && !task.verifyValidators?.length)
      return "private task: no miner is allowlisted for its key to verify it, and its token ids never leave the replica; not verified";
    if (task.assign.params.constraint) return "constrained decoding is not verified";
    if (!r || !(sealed ? r.token_ids_sealed : r.token_ids))
      return "the replica's token ids are not on record (committed before the session upgraded); not verified";
    if (this.outsiders(task).length === 0)
      return `no ${sealed ? "allowlisted " : ""}validator outside the task serves ${cfg.model}; not verified`;
    const n = r.token_ids?.length ?? r.usage?.completion_tokens ?? 0;
    const positions = opt.fraction < 1 ? spotPositions(n, opt.fraction) : undefined;
    const round: Round = {
      miner: chosen,
      consensus,
      fraction: opt.fraction,
      ...(positions ? { positions } : {}),
      asked: new Map(),
      late: new Set(),
      judged: new Map(),
      // A dispute is settled by validators that never saw the failed output (not its accusers).
      tried: new Set(accused.flatMap((a) => a.verify_failed?.seen_by ?? [])),
      wanted: Math.max(1, cfg.validator_count),
      ...(accused.length ? { accused } : {}),
    };
    if (this.ask(task, round, round.wanted, now) === 0)
      return accused.length
        ? "no validator that never saw it is left; not verified"
        : "the task's deadline leaves no time for verification; not verified";
    this.rounds.set(task.id, round);
    return null;
  }

  onAnswer(ws: WebSocket, miner: string, msg: Answer): void {
    const task = this.host.openTask(Number(msg.task_id));
    const round = this.rounds.get(Number(msg.task_id));
    if (!task || !(round?.asked.has(miner) || round?.late.has(miner))) {
      return this.parts.sockets.send(ws, {
        type: "error",
        code: "unknown_task",
        message: "no verification of this task was asked of this miner",
        task_id: msg.task_id,
      });
    }
    round.asked.delete(miner);
    round.late.delete(miner);
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
      for (const [miner, deadline] of [...round.asked]) {
        if (deadline > now) continue;
        round.asked.delete(miner);
        round.late.add(miner);
      }
      const task = this.host.openTask(id);
      if (task) this.continue(task, round, now);
    }
  }

  /** Miners outside the task that may verify it: for a private task, only those allowlisted for its key. */
  private outsiders(task: OpenTask): MinerSocket[] {
    const cfg = this.parts.config();
    const all = eligibleValidators(task, this.parts.sockets.connected(), cfg.model, (a) => this.parts.load.benched(a)).outsiders;
    if (!task.assign.payload?.encrypted) return all;
    const allowed = new Set(task.verifyValidators ?? []);
    return all.filter((m) => allowed.has(m.claims.address.toLowerCase()));
  }

  /** Sends `verify` to up to `count` untried outsiders, the least loaded first. */
  private ask(task: OpenTask, round: Round, count: number, now: number): number {
    const deadline = Math.min(task.deadline_at, now + this.timeoutMs);
    const r = task.replicas.get(round.miner);
    const ids = r?.token_ids_sealed
      ? { token_ids_sealed: r.token_ids_sealed, completion_tokens: r.usage?.completion_tokens ?? 0 }
      : r?.token_ids && { token_ids: r.token_ids };
    if (deadline <= now || !r || !ids) return 0;
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
        ...ids,
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
    if (votes.length === 0 && round.late.size > 0 && now < task.deadline_at) {
      round.waitUntil = task.deadline_at;
      return this.parts.armAlarm(task.deadline_at);
    }
    this.rounds.delete(task.id);
    const r = task.replicas.get(round.miner);
    if (!r) return;
    if (votes.length === 0) {
      // Fail closed: an output nobody checked could be a cheat that outlasted busy (or silent) validators.
      const message = "no validator answered before the task's deadline: the output is not verified, so it is not returned";
      return this.host.fail(task, "timeout", message, now);
    }
    if (fails > passes) return this.fail(task, round, r);
    if (round.accused) return this.settleDispute(task, round, r, votes, now);
    this.host.close(task, round.miner, this.passed(task, round, votes), now);
  }

  /** Fresh validators passed a reproduced failed output: the accusation is lifted, both replicas agree. */
  private settleDispute(task: OpenTask, round: Round, r: Replica, votes: Judged[], now: number): void {
    const accused = round.accused!;
    const verdict = disputeVerdict(task, r, accused, this.passed(task, round, votes));
    for (const x of [...accused, r]) {
      this.parts.store.saveVerifyFailed(task.id, x.miner, null);
      this.parts.store.setReplicaState(task.id, x.miner, x.state, x.reason ?? "", x.acked_at);
    }
    this.host.close(task, r.miner, verdict, now);
  }

  /** `r` reproduced `a`'s failed output and nobody fresh could check it: it fails with `a`'s evidence. */
  private failAs(task: OpenTask, r: Replica, a: Replica, why: string): void {
    const f = a.verify_failed!;
    const reason = `it reproduced exactly an output validators failed (${f.reason}), and ${why.replace(/; not verified$/, "")} to settle it`;
    r.verify_failed = { ...f, reason };
    this.parts.store.saveVerifyFailed(task.id, r.miner, r.verify_failed);
    task.recruitingAt = undefined;
    this.host.retry(task, r, `verification failed: ${reason}`);
  }

  private fail(task: OpenTask, round: Round, r: Replica): void {
    const against = [...round.judged].filter(([, v]) => !v.ok);
    const worst = against.map(([, v]) => v).sort((a, b) => b.count - a.count)[0];
    const by = against.map(([m]) => m);
    const evidence: VerifyFailed = { positions: worst.positions, count: worst.count, reason: worst.reason, by, seen_by: [...round.tried] };
    // An outlier (outcomes.ts) that no longer counts (task.ts countingReplicas); its row says why.
    r.verify_failed = evidence;
    this.parts.store.saveVerifyFailed(task.id, r.miner, evidence);
    task.recruitingAt = undefined;
    this.host.retry(task, r, `verification failed: ${worst.reason}`);
  }

  private passed(task: OpenTask, round: Round, votes: Judged[]): ConsensusView {
    const ok = votes.filter((v) => v.ok);
    const failed = failedEvidence(task);
    const margins = ok.map((v) => v.minMargin).filter((m): m is number => m !== null);
    const chosen = task.replicas.get(round.miner);
    const tokens = chosen?.token_ids?.length ?? chosen?.usage?.completion_tokens ?? 0;
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
