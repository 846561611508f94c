import type { ErrorCode, JsonPrimitive } from "./errors.ts";
import type { GenerationParams, PromptSpec } from "./generation.ts";
import type { ReplicaState, TaskState } from "./task-state.ts";

// Shapes the router returns and clients read. Times are epoch milliseconds; blocks are oracle heights.

export type SessionMode = "ephemeral" | "dedicated";

export interface SessionConfig {
  id: string;
  name: string;
  owner: string;
  metadata: { [key: string]: JsonPrimitive };
  model: string;
  min_miners: number;
  max_miners: number;
  redundancy: number;
  validator_count: number;
  mode: SessionMode;
  dedicated_miners: string[];
  /** Seconds. */
  task_timeout: number;
  ack_timeout: number;
  /** LLM tokens deposited for this session's tasks. */
  deposit: number;
  created_at: number;
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
  hash: string | null;
  signature: string | null;
  /** Assignment to commit, ms. */
  latency_ms: number | null;
  inference_ms: number | null;
  first_token_ms: number | null;
  agreed: boolean | null;
  reason: string | null;
}

export interface ConsensusView {
  method: "exact" | "single";
  status: "agreed" | "no_quorum";
  quorum: number;
  hash: string;
  agreed: string[];
  outliers: string[];
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
}
