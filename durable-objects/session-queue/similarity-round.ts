import type { SessionMinerMessage } from "../../shared/protocol.ts";
import type { ConsensusView } from "../../shared/views.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import { distanceMatrix, judgeSimilarity, medianMatrix, wellFormed } from "../similarity.ts";
import type { QueueParts } from "./parts.ts";
import { exactVerdict, quorumOf } from "./quorum.ts";
import type { OpenTask, Replica } from "./task.ts";
import { eligibleValidators, type Panel, panelFor } from "./validators.ts";

// The similarity round of a task whose committed outputs differ: validators (miners serving the session's
// embedding model: outsiders only, or at least three of the task's own replicas when no outsider exists, one of
// them possibly a replica the task rejected or timed out — validators.ts) embed every output; the SessionQueue
// computes the cosine distances itself, takes the element-wise median over validators and names outliers
// (similarity.ts). Rounds live in memory; after an eviction the alarm finds the task with every replica
// reported and starts a new one.

/** How long a validator has to embed a task's outputs (the first call may load its embedding model). */
export const VALIDATION_TIMEOUT_MS = 15_000;

interface Round {
  /** The replicas judged, in the order their texts were sent. */
  miners: string[];
  texts: string[];
  /** Validator → deadline of its answer. */
  asked: Map<string, number>;
  /** Validator → the distance matrix of its embeddings. */
  answers: Map<string, number[][]>;
  tried: Set<string>;
  /** Outsiders, or (when none exists) the task's own replicas, at least three answering (validators.ts). */
  panel: Panel;
  /** The caught replicas (rejected or timed out) admitted to make up the three insiders: `panel.caught` of them. */
  admitted: Set<string>;
  /** The embedding dimension of the first well-formed answer: every other validator's must match it. */
  dim?: number;
}

/** What a round needs of its SessionQueue beyond the common parts. */
export interface RoundHost {
  openTask(id: number): OpenTask | undefined;
  /** Text a streaming client already holds: an agreeing output that continues it is preferred. */
  sentText(taskId: number): string;
  /** The verdict: closes the task only with a quorum (session-queue/quorum-gate.ts). */
  conclude(task: OpenTask, chosen: string, consensus: ConsensusView, now: number): void;
}

/**
 * Whether a similarity task may still get a missing replica: a connected, unbenched miner is not in it yet, and
 * enough time is left for that replica and its validation (the last VALIDATION_TIMEOUT_MS are kept for judging
 * what came in).
 */
export function canStillFill(task: OpenTask, unbenched: readonly MinerSocket[], now: number): boolean {
  if (now >= task.deadline_at - VALIDATION_TIMEOUT_MS) return false;
  return unbenched.some((m) => !task.replicas.has(m.claims.address));
}

type Answer = Extract<SessionMinerMessage, { type: "embeddings" | "embed_failed" }>;

export class SimilarityRounds {
  private readonly rounds = new Map<number, Round>();
  private readonly parts: QueueParts;
  private readonly host: RoundHost;

  constructor(parts: QueueParts, host: RoundHost) {
    this.parts = parts;
    this.host = host;
  }

  has(taskId: number): boolean {
    return this.rounds.has(taskId);
  }

  /** The task finished without this round's verdict (its owner cancelled it): late answers are refused as unasked. */
  drop(taskId: number): void {
    this.rounds.delete(taskId);
  }

  /** Answer deadlines of the validators asked, for the alarm. */
  *deadlines(): Iterable<number> {
    for (const r of this.rounds.values()) yield* r.asked.values();
  }

  /** Asks validators to embed the committed outputs; null once asked, else why not (the task is judged on hashes). */
  start(task: OpenTask, committed: Replica[], now: number): string | null {
    const cfg = this.parts.config();
    const { outsiders, insiders, caught } = this.eligible(task);
    const panel = panelFor(outsiders.length, cfg.validator_count, insiders.length, caught.length);
    if (panel.insiders && insiders.length + panel.caught < panel.need) {
      return outsiders.length + insiders.length === 0
        ? `no validator serving ${cfg.embedding_model} is connected; fell back to exact hashes`
        : `every validator serving ${cfg.embedding_model} is a replica of this task and fewer than ${panel.need} are connected; fell back to exact hashes`;
    }
    const admitted = new Set(this.leastLoaded(caught, panel.caught).map((m) => m.claims.address));
    const round: Round = { miners: [], texts: [], asked: new Map(), answers: new Map(), tried: new Set(), panel, admitted };
    for (const r of committed) {
      round.miners.push(r.miner);
      round.texts.push(this.parts.store.committedText(task.id, r.miner));
    }
    if (this.ask(task, round, panel.wanted, now) === 0)
      return "the task's deadline leaves no time for validation; fell back to exact hashes";
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
        message: "no validation of this task was asked of this miner",
        task_id: msg.task_id,
      });
    }
    round.asked.delete(miner);
    const cfg = this.parts.config();
    if (msg.type === "embed_failed") {
      console.warn(`session ${cfg.id} task ${task.id}: validator ${miner} could not embed: ${msg.reason}`);
    } else if (msg.model !== cfg.embedding_model || !wellFormed(msg.vectors, round.texts.length, round.dim)) {
      console.warn(`session ${cfg.id} task ${task.id}: validator ${miner} sent malformed embeddings (model ${msg.model})`);
    } else {
      round.dim ??= msg.vectors[0].length;
      round.answers.set(miner, distanceMatrix(msg.vectors));
    }
    this.continue(task, round, Date.now());
  }

  /** Alarm: validators past their deadline are given up on; a round with nobody left to wait for goes on. */
  expire(now: number): void {
    for (const [id, round] of [...this.rounds]) {
      for (const [miner, deadline] of [...round.asked]) if (deadline <= now) round.asked.delete(miner);
      const task = this.host.openTask(id);
      if (task) this.continue(task, round, now);
    }
  }

  /** Validators that may judge this task, outside it and within it (validators.ts). */
  private eligible(task: OpenTask) {
    const model = this.parts.config().embedding_model;
    return eligibleValidators(task, this.parts.sockets.connected(), model, (a) => this.parts.load.benched(a));
  }

  private leastLoaded(miners: readonly MinerSocket[], count: number): MinerSocket[] {
    return [...miners].sort((a, b) => this.parts.load.ratio(a) - this.parts.load.ratio(b)).slice(0, count);
  }

  /**
   * Sends `embed` to up to `count` untried validators of the round's panel (outsiders, or the task's replicas
   * and the caught ones admitted when no outsider exists), the least loaded first.
   */
  private ask(task: OpenTask, round: Round, count: number, now: number): number {
    const model = this.parts.config().embedding_model;
    const deadline = Math.min(task.deadline_at, now + VALIDATION_TIMEOUT_MS);
    if (deadline <= now) return 0;
    const { outsiders, insiders, caught } = this.eligible(task);
    const pool = round.panel.insiders ? [...insiders, ...caught.filter((m) => round.admitted.has(m.claims.address))] : outsiders;
    const picked = this.leastLoaded(
      pool.filter((m) => !round.tried.has(m.claims.address)),
      count,
    );
    for (const m of picked) {
      round.tried.add(m.claims.address);
      round.asked.set(m.claims.address, deadline);
      this.parts.sockets.send(m.ws, { type: "embed", task_id: String(task.id), model, texts: round.texts, deadline });
    }
    if (picked.length > 0) this.parts.armAlarm(deadline);
    return picked.length;
  }

  /** Concludes once every asked validator answered or timed out; replaces missing ones while time remains. */
  private continue(task: OpenTask, round: Round, now: number): void {
    if (round.asked.size > 0) return;
    const { wanted, need, insiders } = round.panel;
    if (round.answers.size < wanted && this.ask(task, round, wanted - round.answers.size, now) > 0) return;
    this.rounds.delete(task.id);
    const replicas = round.miners.map((m) => task.replicas.get(m)!);
    if (round.answers.size < need) {
      // Too few could judge similarity (replicas judging themselves need three): the exact hashes decide.
      const why =
        insiders && round.answers.size > 0 ? `fewer than ${need} validators (replicas of the task) answered` : "no validator answered";
      const v = exactVerdict(replicas, task.redundancy, { method: "exact", note: `${why} in time; fell back to exact hashes` });
      return this.host.conclude(task, v.chosen, v.consensus, now);
    }
    const cfg = this.parts.config();
    const sent = this.host.sentText(task.id);
    const j = judgeSimilarity(medianMatrix([...round.answers.values()]), cfg.dispersion_threshold, (i) => round.texts[i].startsWith(sent));
    const round4 = (x: number) => Math.round(x * 1e4) / 1e4;
    this.host.conclude(
      task,
      round.miners[j.chosen],
      {
        method: "similarity",
        status: j.agreed.length >= quorumOf(task.redundancy) ? "agreed" : "no_quorum",
        quorum: quorumOf(task.redundancy),
        hash: replicas[j.chosen].hash!,
        agreed: j.agreed.map((i) => round.miners[i]),
        outliers: j.outliers.map((i) => round.miners[i]),
        similarity: {
          model: cfg.embedding_model,
          threshold: cfg.dispersion_threshold,
          validators: [...round.answers.keys()],
          distances: Object.fromEntries(round.miners.map((m, i) => [m, round4(j.distances[i])])),
          dispersion: round4(j.dispersion),
        },
      },
      now,
    );
  }
}
