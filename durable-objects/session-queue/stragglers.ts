import type { Hex } from "viem";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { replicaIsLive } from "../../shared/task-state.ts";
import type { ConsensusView } from "../../shared/views.ts";
import type { Outcome } from "../reputation.ts";
import { checkCommit, checkPrecommit } from "../slash-evidence.ts";
import { outcomeEntry } from "./outcomes.ts";
import type { QueueParts } from "./parts.ts";
import { type Lingering, liveReplicas, type OpenTask, phaseDeadline, type Replica } from "./task.ts";

// Stragglers: replicas still live when consensus closed their task. They are held to the same rules (signed
// precommit, commit matching it, deadlines — a silent one times out) and their result is recorded against the
// consensus (agreeing or outlier), but they earn nothing and change nothing the client already has.

type Ended = "rejected" | "timed_out" | "released" | "disconnected";

export class Stragglers {
  private readonly lingering = new Map<number, Lingering>();
  private readonly parts: QueueParts;

  constructor(parts: QueueParts) {
    this.parts = parts;
  }

  /** A task just closed: its live replicas become stragglers, watched until their phase deadline. */
  add(task: OpenTask, consensus: ConsensusView): void {
    const live = liveReplicas(task);
    if (live.length === 0) return;
    this.lingering.set(task.id, { task, consensus });
    this.parts.armAlarm(Math.min(...live.map(phaseDeadline)));
  }

  /** Rebuilt after an eviction from a closed task with live replicas. */
  restore(task: OpenTask, consensus: ConsensusView): void {
    this.lingering.set(task.id, { task, consensus });
  }

  get size(): number {
    return this.lingering.size;
  }

  get(taskId: number): Lingering | undefined {
    return this.lingering.get(taskId);
  }

  values(): Iterable<Lingering> {
    return this.lingering.values();
  }

  /** The live straggler replica of `miner` in task `taskId`, if any. */
  live(taskId: number, miner: string): { late: Lingering; replica: Replica } | null {
    const late = this.lingering.get(taskId);
    const replica = late?.task.replicas.get(miner);
    return late && replica && replicaIsLive(replica.state) ? { late, replica } : null;
  }

  async onMessage(late: Lingering, r: Replica, msg: SessionMinerMessage): Promise<void> {
    const now = Date.now();
    if (msg.type === "ack" && r.state === "assigned") {
      r.state = "acked";
      r.acked_at = now;
    } else if (msg.type === "precommit" && r.state !== "precommitted") {
      if (!(await checkPrecommit(this.parts.config().id, r, msg, this.parts.domain))) {
        return this.end(late, r, "rejected", "precommit signature does not recover to the miner's address", now);
      }
      this.parts.store.recordPrecommit(late.task.id, r.miner, r.acked_at ?? now, now, msg.hash, msg.signature);
      r.state = "precommitted";
      r.commitment = msg.hash as Hex;
    } else if (msg.type === "commit") {
      await this.onCommit(late, r, msg, now);
    } else if (msg.type === "release") {
      this.end(late, r, "released", msg.reason, now);
    }
  }

  private async onCommit(late: Lingering, r: Replica, msg: Extract<SessionMinerMessage, { type: "commit" }>, now: number): Promise<void> {
    const { task, consensus } = late;
    if (r.state !== "precommitted") return this.end(late, r, "rejected", "commit arrived before a precommit", now);
    const scope = { session: this.parts.config().id, task: msg.task_id, miner: r.miner };
    const reveal = await checkCommit(this.parts.payloads, scope, task, r, msg);
    if (!replicaIsLive(r.state)) return; // ended while R2 was awaited
    if (!reveal.ok) return this.end(late, r, "rejected", reveal.fault, now);
    const agreed = reveal.hash === consensus.hash;
    const judged = { ...consensus, [agreed ? "agreed" : "outliers"]: [...consensus[agreed ? "agreed" : "outliers"], r.miner] };
    // Written first: memory follows only what storage holds.
    this.parts.store.recordCommit(task.id, r.miner, now, msg, reveal.hash, { reason: "committed after the quorum closed the task" });
    this.parts.store.updateConsensus(task.id, judged);
    late.consensus = judged;
    Object.assign(r, { state: "committed", committed_at: now, hash: reveal.hash });
    this.judge(late, r, agreed ? "agreed" : "outlier", agreed ? null : "late result disagrees with consensus", now);
  }

  /** Alarm: stragglers past their ack or commit deadline time out. */
  sweep(now: number): void {
    for (const late of [...this.lingering.values()]) {
      for (const r of liveReplicas(late.task)) {
        if (r.state === "assigned" && r.ack_deadline <= now) this.end(late, r, "timed_out", "missed the ack deadline", now);
        else if (r.commit_deadline <= now) this.end(late, r, "timed_out", "missed the commit deadline", now);
      }
    }
  }

  /** A miner with no socket left: its stragglers are gone. */
  minerGone(miner: string, reason: string, now: number): void {
    for (const late of [...this.lingering.values()]) {
      const r = late.task.replicas.get(miner);
      if (r && replicaIsLive(r.state)) this.end(late, r, "disconnected", reason, now);
    }
  }

  end(late: Lingering, r: Replica, state: Ended, reason: string, now: number): void {
    this.parts.store.setReplicaState(late.task.id, r.miner, state, reason, r.acked_at);
    r.state = state;
    r.reason = reason;
    if (state === "rejected" || state === "timed_out") {
      this.parts.sockets.sendTo(r.miner, { type: "cancel", task_id: String(late.task.id), reason: `${state}: ${reason}` });
    }
    this.judge(late, r, state, reason, now);
  }

  /** Reports a straggler's outcome (unrewarded) and forgets the task once no replica is live. */
  private judge(late: Lingering, r: Replica, outcome: Outcome, reason: string | null, now: number): void {
    if (late.consensus.status === "agreed") {
      this.parts.outcomes.push([
        outcomeEntry(late.task, r, outcome, reason, { session_id: this.parts.config().id, at: now, block: this.parts.block(now) }),
      ]);
    }
    if (liveReplicas(late.task).length === 0) this.lingering.delete(late.task.id);
  }
}
