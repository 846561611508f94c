import type { Hex } from "viem";
import { type GenerationParams, isGreedy, type PromptSpec } from "../../shared/generation.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";
import type { SessionServerMessage } from "../../shared/protocol.ts";
import { type ReplicaState, replicaIsLive, type TaskState } from "../../shared/task-state.ts";
import type { ConsensusView, SessionConfig } from "../../shared/views.ts";
import type { SubmitRequest } from "./rpc.ts";

// The in-memory shapes of a SessionQueue: open tasks and their replicas (one per miner a task was given to),
// mirrored from SQLite so the hot path reads nothing back from storage.

export interface Replica {
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
  /** Its off-chain result was written (one object per replica; memory only, R2 backs it after an eviction). */
  result_claimed?: boolean;
}

/** The assign message of a task, less what differs per replica and per send. */
export type AssignTemplate = Omit<Extract<SessionServerMessage, { type: "assign" }>, "ack_deadline" | "commit_deadline" | "block">;

/** What a task row keeps of its request (JSON in `tasks.request`). */
export interface StoredRequest {
  input: PromptSpec;
  params: GenerationParams;
  /** Similarity sessions: each replica of a sampled task draws its own seed (independent samples). */
  independent_seeds?: boolean;
  payload?: PayloadDescriptor;
}

export interface OpenTask {
  id: number;
  /** The API key owner that submitted it: on a shared session, the only caller that sees it (durable-objects/tenancy.ts). */
  owner: string;
  state: TaskState;
  redundancy: number;
  deadline_at: number;
  /** Deposit tokens held for this task until it finishes (prompt bytes + max_tokens bound its charge). */
  reservedTokens: number;
  stream: boolean;
  assign: AssignTemplate;
  precommit_ms: number;
  replicas: Map<string, Replica>;
  independentSeeds: boolean;
  /** Miners that refused it because the prompt does not fit their model (session-queue/context.ts). */
  contextRefusals?: Set<string>;
}

/** A closed task whose slower replicas are still live: they are judged against its consensus when they report. */
export interface Lingering {
  task: OpenTask;
  consensus: ConsensusView;
}

export const replicasOf = (task: OpenTask): Replica[] => [...task.replicas.values()];

export const liveReplicas = (task: OpenTask): Replica[] => replicasOf(task).filter((r) => replicaIsLive(r.state));

/** Replicas that count toward the task: still working, or done. */
export const countingReplicas = (task: OpenTask): Replica[] =>
  replicasOf(task).filter((r) => replicaIsLive(r.state) || r.state === "committed");

/** When a live replica's current phase runs out. */
export const phaseDeadline = (r: Replica): number => (r.state === "assigned" ? r.ack_deadline : r.commit_deadline);

/** A replica's own seed in a similarity session: stable per miner (so a re-sent assign samples the same). */
export function replicaSeed(seed: number, miner: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${seed}:${miner.toLowerCase()}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
  return (h >>> 0) & 0x7fffffff;
}

/**
 * A new task (`queued`) from a submit: its deadline, replica slots (the session's redundancy, capped by the
 * request), seed and assign message, and what its row keeps of the request.
 */
export function newTask(
  config: SessionConfig,
  req: SubmitRequest,
  id: number,
  now: number,
  reservedTokens: number,
): { task: OpenTask; request: StoredRequest } {
  // The seed defaults to the task id so every replica of a sampled task draws the same numbers.
  const params: GenerationParams = { ...req.params, seed: req.params.seed ?? id };
  // A similarity session samples independently per replica unless the client pinned the seed.
  const independentSeeds = config.consensus === "similarity" && !isGreedy(params) && req.params.seed === undefined;
  const payload = req.payload ? { payload: req.payload } : {};
  const deadline = now + Math.round((req.timeout_s ?? config.task_timeout) * 1000);
  const task: OpenTask = {
    id,
    owner: req.owner,
    state: "queued",
    redundancy: Math.max(1, Math.min(config.redundancy, req.max_miners ?? config.redundancy)),
    deadline_at: deadline,
    reservedTokens,
    stream: req.stream,
    assign: {
      type: "assign",
      session_id: config.id,
      task_id: String(id),
      model: config.model,
      input: req.input,
      params,
      stream: req.stream,
      ...payload,
    },
    precommit_ms: Math.round((req.precommit_timeout_s ?? req.timeout_s ?? config.task_timeout) * 1000),
    replicas: new Map(),
    independentSeeds,
  };
  return { task, request: { input: req.input, params, ...(independentSeeds ? { independent_seeds: true } : {}), ...payload } };
}

/** A replica of the task for `miner`, assigned now: its ack window (the session's) and commit window (the task's). */
export function newReplica(task: OpenTask, miner: string, now: number, ackTimeoutS: number): Replica {
  return {
    miner,
    state: "assigned",
    assigned_at: now,
    ack_deadline: Math.min(task.deadline_at, now + Math.round(ackTimeoutS * 1000)),
    commit_deadline: Math.min(task.deadline_at, now + task.precommit_ms),
    acked_at: null,
    hash: null,
    streamed: "",
  };
}

/** The assign message for one replica: its deadlines, and in similarity sessions its own seed. */
export function assignMessage(task: OpenTask, r: Replica, block: number): Extract<SessionServerMessage, { type: "assign" }> {
  const params = task.independentSeeds
    ? { ...task.assign.params, seed: replicaSeed(task.assign.params.seed, r.miner) }
    : task.assign.params;
  return { ...task.assign, params, ack_deadline: r.ack_deadline, commit_deadline: r.commit_deadline, block };
}
