import type { ErrorCode, JsonPrimitive } from "./errors.ts";
import type { GenerationParams, PromptSpec } from "./generation.ts";
import type { PayloadDescriptor } from "./payloads.ts";
import type { ReplicaState, TaskState } from "./task-state.ts";

// Shapes the router returns and clients read. Times are epoch milliseconds; blocks are oracle heights.

export type SessionMode = "ephemeral" | "dedicated";

/**
 * How a session's redundant results are judged. `exact`: identical hashes only. `auto`: exact first; when no
 * quorum of hashes agrees, validators compare embeddings. `similarity`: as auto, and sampled replicas each draw
 * their own seed (independent samples, as in proof-of-inference by embedding distance).
 */
export type ConsensusMode = "auto" | "exact" | "similarity" | "verify";

export interface SessionConfig {
  id: string;
  name: string;
  owner: string;
  metadata: { [key: string]: JsonPrimitive };
  model: string;
  min_miners: number;
  max_miners: number;
  redundancy: number;
  /** Validators asked to embed outputs when similarity consensus runs (at least one is always asked). */
  validator_count: number;
  consensus: ConsensusMode;
  /** Cosine distance from the consensus output beyond which a replica is an outlier. */
  dispersion_threshold: number;
  /** Feature-extraction model validators run. */
  embedding_model: string;
  /**
   * Opt-in: a redundant task whose replicas found no quorum before its deadline answers anyway with its best
   * candidate (`consensus.status: "no_quorum"`, `consensus.best_effort: true`). Default false: it fails 409
   * `no_consensus` instead.
   */
  best_effort?: boolean;
  mode: SessionMode;
  dedicated_miners: string[];
  /** Seconds. */
  task_timeout: number;
  ack_timeout: number;
  /** LLM tokens deposited for this session's tasks. */
  deposit: number;
  created_at: number;
  /** Where the deposit came from: the grant at creation, then deposits paid on chain or via x402 (absent: the grant only). */
  deposits?: DepositRecord[];
}

/** One deposit of a session's LLM tokens and its source. */
export interface DepositRecord {
  /** granted: given at creation (the owner's declared deposit); chain: a tUSD transfer to the router; x402: an x402 payment. */
  source: "granted" | "chain" | "x402";
  /** LLM tokens credited. */
  tokens: number;
  /** tUSD base units paid (chain, x402). */
  amount?: string;
  /** The transfer's or the settlement's transaction hash. */
  tx_hash?: string;
  payer?: string;
  at: number;
}

export interface SessionUsage {
  deposit: number;
  used: number;
  reserved: number;
  available: number;
  tasks_total: number;
  tasks_open: number;
  connected_miners: string[];
}

export interface ReplicaView {
  miner: string;
  state: ReplicaState;
  assigned_at: number;
  assigned_block: number;
  acked_at: number | null;
  precommitted_at: number | null;
  committed_at: number | null;
  /** Result hash of the revealed text (what consensus compares); null until the task is finished. */
  hash: string | null;
  /** What the miner precommitted and signed (session, task, miner, result hash); null until the task is finished. */
  commitment: string | null;
  signature: string | null;
  /** Assignment to commit, ms. */
  latency_ms: number | null;
  inference_ms: number | null;
  first_token_ms: number | null;
  /** Where this replica's result is stored when it went off-chain (v2/v3). */
  result_urn?: string | null;
  agreed: boolean | null;
  reason: string | null;
}

export interface SimilarityEvidence {
  model: string;
  threshold: number;
  /** Validators whose embeddings were used (their distance matrices are combined by median). */
  validators: string[];
  /** Each committed replica's cosine distance to the chosen output. */
  distances: { [miner: string]: number };
  /** Mean pairwise cosine distance over the committed replicas. */
  dispersion: number;
}

/** An embedding job's verdict (durable-objects/session-queue/embedding-consensus.ts). */
export interface EmbeddingEvidence {
  model: string;
  /** Cosine distance from the medoid replica within which a replica agrees (on every text). */
  tolerance: number;
  /** Each answering replica's distance to the medoid: the largest over the job's texts. */
  distances: { [miner: string]: number };
}

/**
 * A verified task's evidence (durable-objects/session-queue/verify-round.ts): validators re-scored the output in
 * one teacher-forced forward pass and re-ran the seeded sampler at every checked position.
 */
export interface VerificationEvidence {
  /** Share of completion positions checked: 1, or the spot-check fraction. */
  fraction: number;
  /** Validators whose verdicts on the chosen output counted. */
  validators: string[];
  /** Positions checked of the chosen output, and of its completion tokens. */
  checked: number;
  tokens: number;
  /** Probability that a spot check catches an output with one wrong token among `tokens` (1 when full). */
  detection: number;
  /** Positions accepted although the recomputed choice differed, its draw or logit gap within the tolerance. */
  near_ties: number;
  /** The smallest distance of a recomputed decision from its boundary (probability units; greedy: logit gap). */
  min_margin: number | null;
  /** Replicas that failed verification: the first failing positions (completion-token index; -1: decode or usage) and how many. */
  failed: { [miner: string]: { positions: number[]; count: number; reason: string } };
  /**
   * Accusations not confirmed: a replica validators failed whose token ids the chosen replica (never shown them)
   * reproduced exactly with the same seed. Its evidence, and the validators that failed it; neither is punished.
   */
  disputed?: { [miner: string]: { positions: number[]; count: number; reason: string; by: string[]; reproduced_by: string } };
}

export interface ConsensusView {
  method: "exact" | "single" | "similarity" | "embedding" | "verify";
  status: "agreed" | "no_quorum";
  quorum: number;
  /** Hash of the chosen output. */
  hash: string;
  agreed: string[];
  outliers: string[];
  similarity?: SimilarityEvidence;
  embedding?: EmbeddingEvidence;
  verification?: VerificationEvidence;
  /** Why consensus fell back (e.g. no validator answered). */
  note?: string;
  /** The answer was given without a quorum because the session opted into best_effort (status is no_quorum). */
  best_effort?: true;
  /** Agreeing miners whose reported usage differed from what was charged (the fewest tokens any of them reported). */
  usage_disputed?: string[];
}

export interface TaskResult {
  text: string;
  finish_reason: "stop" | "length";
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  hash: string;
  miner: string;
  inference_ms: number;
}

export interface TaskView {
  task_id: string;
  session_id: string;
  status: TaskState;
  model: string;
  input: PromptSpec;
  params: GenerationParams;
  /** Off-chain / private task (v2/v3): prompt URN, encryption, result policy. */
  payload?: PayloadDescriptor | null;
  stream: boolean;
  client_reference: string | null;
  redundancy: number;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  created_block: number;
  finished_block: number | null;
  deadline_at: number;
  deadline_block: number;
  assigned_miners: string[];
  results: { data: string[]; miners: string[] };
  result: TaskResult | null;
  consensus: ConsensusView | null;
  replicas: ReplicaView[];
  error: { code: ErrorCode; message: string } | null;
  /** An embedding job (POST /api/v1/embeddings) rather than a completion; `input` and `params` are then placeholders. */
  kind?: "embedding";
  embedding?: EmbeddingJobView;
}

/** What a task view shows of an embedding job: its texts (the owner's), and once closed the chosen vectors. */
export interface EmbeddingJobView {
  model: string;
  texts: string[];
  prompt_tokens: number;
  dimensions: number | null;
  /** The agreed vectors, one per text (single-task reads of a closed job; lists leave them out: null). */
  vectors: number[][] | null;
}

/**
 * One event of the portal's live stream, GET /api/v1/network/events (workers/portal/network-feed.ts). `M` is the
 * miner view: the router sends its whole MinerView, the portal (portal/src) reads the fields it shows.
 */
export interface NetworkEvent<M> {
  at: number;
  block: { height: number; interval_ms: number; at: number };
  connected: number;
  active_sessions: number;
  total_sessions: number;
  miners: M[];
  /** Σ of every miner's reputation `tasks` (each scored replica result): viewers derive results per second from it. */
  results_total: number;
  /** Percentiles over the online miners' moving-average task latency (assignment to commit), ms; null: none yet. */
  latency_ms: { p50: number | null; p90: number | null; p99: number | null };
}
