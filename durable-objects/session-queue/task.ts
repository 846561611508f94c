import type { Hex } from "viem";
import type { JsonPrimitive } from "../../shared/errors.ts";
import { type GenerationParams, isGreedy, type PromptSpec } from "../../shared/generation.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";
import type { SessionMinerMessage, SessionServerMessage } from "../../shared/protocol.ts";
import { type ReplicaState, replicaIsLive, type TaskState } from "../../shared/task-state.ts";
import type { ConsensusView, SessionConfig } from "../../shared/views.ts";
import { taskPromptBytes } from "./prompt-bytes.ts";
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
  /** What it precommitted (signed): shared/signing.ts `commitmentHash`, binding this miner. */
  commitment: Hex | null;
  /** The result hash of its revealed text (once its commit is in): what consensus compares. */
  hash: Hex | null;
  /** Text streamed so far by this replica (only while a client streams; bounded like a commit). */
  streamed: string;
  streamedBytes?: number;
  /** Its commit, checked and written, waiting at the commit-reveal barrier (session-queue/barrier.ts). */
  held?: HeldCommit;
  /** The usage its commit reported (miner-input.ts checks what is charged). */
  usage?: { prompt_tokens: number; completion_tokens: number };
  committed_at?: number;
  /** Why the replica ended, when it ended badly (reported to the pool's ledger). */
  reason?: string;
  /** Its precommit's signature (memory only): part of the slash evidence if its commit does not match. */
  precommit_signature?: string;
  /** A rejected replica's proof, sent with its slash (durable-objects/slash-evidence.ts). */
  evidence?: { [key: string]: JsonPrimitive };
  /** Its off-chain result was written (one object per replica; memory only, R2 backs it after an eviction). */
  /** SHA-256 of the off-chain result object this replica wrote (one per task; a retry of the same bytes is fine). */
  result_claimed?: string;
  /** Verified tasks: the completion's token ids from its commit, which validators re-score (also in SQLite until the task ends). */
  token_ids?: number[];
  /** Private verified tasks: the ids sealed under the task key (the router never opens them). */
  token_ids_sealed?: string;
  /** Validators failed its output (verify-round.ts): an outlier that no longer counts toward the task. */
  verify_failed?: VerifyFailed;
}

/** Why a replica failed verification, and who saw its token ids (never a replica whose identical output disputes it). */
export interface VerifyFailed {
  positions: number[];
  count: number;
  reason: string;
  /** The validators that failed it. */
  by: string[];
  /** Every validator it was sent to. */
  seen_by: string[];
}

/** A commit that passed its checks and waits for the barrier (written to its replica's row, `held_at`). */
export interface HeldCommit {
  msg: Extract<SessionMinerMessage, { type: "commit" }>;
  /** When it arrived: its replica's commit time once applied. */
  at: number;
  /** The revealed result hash. */
  hash: Hex;
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
  /** Private tasks: the miners allowlisted for its key (lower case), the only validators it may have. */
  verify_validators?: string[];
}

/** The most allowlisted validators a private task keeps. */
export const MAX_VERIFY_VALIDATORS = 64;

export interface OpenTask {
  id: number;
  /** The API key owner that submitted it: on a shared session, the only caller that sees it (durable-objects/tenancy.ts). */
  owner: string;
  state: TaskState;
  redundancy: number;
  deadline_at: number;
  /** Deposit tokens held for this task until it finishes (prompt bytes + max_tokens bound its charge). */
  reservedTokens: number;
  /** UTF-8 bytes of the prompt as the model reads it: bounds the prompt tokens a miner may report. */
  promptBytes: number;
  stream: boolean;
  assign: AssignTemplate;
  precommit_ms: number;
  replicas: Map<string, Replica>;
  independentSeeds: boolean;
  /** Miners that refused it because the prompt does not fit their model (session-queue/context.ts). */
  contextRefusals?: Set<string>;
  /** Committed replicas when a verdict found no quorum: judged again once more have committed (quorum-gate.ts). */
  recruitingAt?: number;
  /** Private tasks: the miners allowlisted for its key, the only ones that may verify it (verify-round.ts). */
  verifyValidators?: string[];
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
  replicasOf(task).filter((r) => replicaIsLive(r.state) || (r.state === "committed" && !r.verify_failed));

/** When a live replica's current router-set phase runs out (missing it costs reputation). */
export const phaseDeadline = (r: Replica): number => (r.state === "assigned" ? r.ack_deadline : r.commit_deadline);

/** When the client's own deadlines end this replica (without blame): the task deadline, and precommit_timeout until it precommitted. */
export function clientCutoff(task: Pick<OpenTask, "deadline_at" | "precommit_ms">, r: Pick<Replica, "state" | "assigned_at">): number {
  const precommitted = r.state === "precommitted" || r.state === "committed";
  return precommitted ? task.deadline_at : Math.min(task.deadline_at, r.assigned_at + task.precommit_ms);
}

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
  // A verify session verifies every task (every position unless the request asked for a spot check).
  if (config.consensus === "verify") params.verify ??= { fraction: 1 };
  // A similarity session samples independently per replica unless the client pinned the seed.
  const independentSeeds = config.consensus === "similarity" && !isGreedy(params) && req.params.seed === undefined;
  const payload = req.payload ? { payload: req.payload } : {};
  const validators = req.payload?.encrypted
    ? [...new Set((req.verify_validators ?? []).map((a) => a.toLowerCase()))].slice(0, MAX_VERIFY_VALIDATORS)
    : [];
  const deadline = now + Math.round((req.timeout_s ?? config.task_timeout) * 1000);
  const task: OpenTask = {
    id,
    owner: req.owner,
    state: "queued",
    redundancy: Math.max(1, Math.min(config.redundancy, req.max_miners ?? config.redundancy)),
    deadline_at: deadline,
    reservedTokens,
    promptBytes: taskPromptBytes(req.input, req.payload, req.prompt_read_bytes),
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
    ...(validators.length ? { verifyValidators: validators } : {}),
  };
  const request: StoredRequest = {
    input: req.input,
    params,
    ...(independentSeeds ? { independent_seeds: true } : {}),
    ...payload,
    ...(validators.length ? { verify_validators: validators } : {}),
  };
  return { task, request };
}

/**
 * A replica of the task for `miner`, assigned now, with its router-set deadlines (session-queue/fair-deadlines.ts):
 * the ack window and the precommit budget from the miner's declared speed. The client's deadlines are the task's
 * (`clientCutoff`); they end a replica too, but without blame.
 */
export function newReplica(miner: string, now: number, windows: { ackMs: number; precommitMs: number }): Replica {
  return {
    miner,
    state: "assigned",
    assigned_at: now,
    ack_deadline: now + Math.round(windows.ackMs),
    commit_deadline: now + Math.round(windows.precommitMs),
    acked_at: null,
    commitment: null,
    hash: null,
    streamed: "",
  };
}

/** The assign message for one replica: its deadlines, and in similarity sessions its own seed. */
export function assignMessage(task: OpenTask, r: Replica, block: number): Extract<SessionServerMessage, { type: "assign" }> {
  const params = task.independentSeeds
    ? { ...task.assign.params, seed: replicaSeed(task.assign.params.seed, r.miner) }
    : task.assign.params;
  // The miner is told when its work stops mattering: its own deadline, or the client's when that comes first.
  const ack_deadline = Math.min(r.ack_deadline, task.deadline_at);
  return { ...task.assign, params, ack_deadline, commit_deadline: Math.min(r.commit_deadline, clientCutoff(task, r)), block };
}
