import type { Receipt } from "../../shared/receipt.ts";
import type { ConsensusView, SessionConfig, SessionUsage, TaskView } from "../../shared/views.ts";

// Request and answer shapes of the routes, as clients see them (the router's OpenAPI document, GET /openapi.json,
// has every field). Answers keep unknown fields: the router may add some.

export type { ConsensusView, Receipt, SessionConfig, SessionUsage, TaskView };

export interface GenerationFields {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  stop?: string[];
  seed?: number;
  /** Seconds. */
  timeout?: number;
  precommit_timeout?: number;
}

export interface CompletionRequest extends GenerationFields {
  prompt: string;
  session_id?: string;
  prompt_type?: number;
  prompt_template?: string;
  client_reference?: string;
  max_miners?: number;
  model?: string;
}

/** v2/v3 (`/api/v2|v3/completions`): off-chain and private payloads. */
export interface OffchainCompletionRequest extends CompletionRequest {
  private?: boolean;
  payload_policy?: "auto" | "inline" | "offchain";
  result_policy?: "inline" | "offchain";
}

export type { SealedReservation } from "../../shared/payloads.ts";

export interface MinerEvidence {
  address: string;
  latency_ms: number | null;
  inference_ms: number | null;
  hash: string | null;
  agreed: boolean | null;
}

export interface Cost {
  currency?: string;
  unit: "micro_usd";
  prompt: number;
  completion: number;
  total: number;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface Completion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: { text: string; index: number; finish_reason: "stop" | "length" | null; logprobs: null }[];
  usage: Usage;
  task_id: string;
  session_id: string;
  request_id: string;
  miners: MinerEvidence[];
  consensus: ConsensusView | null;
  timing?: Record<string, number>;
  cost?: Cost;
  receipt?: Receipt;
  /** v2/v3: where prompt and result are stored. */
  offchain?: {
    prompt_urn: string | null;
    result_urn: string | null;
    encrypted: boolean;
    key_version?: number | null;
    result_policy: string;
    /** `client`: the prompt was sealed by the SDK and the router received only its envelope. */
    sealed_by?: "client";
  };
  streaming_disabled?: boolean;
  /** The SDK's: the completion's text (the first choice; a private result opened locally). */
  text: string;
  [k: string]: unknown;
}

/** One chunk of a streamed completion: `text` is the new text; the last chunk carries usage, cost and receipt. */
export interface CompletionChunk {
  id: string;
  object: "text_completion";
  model: string;
  choices: { text: string; index: number; finish_reason: "stop" | "length" | null }[];
  task_id: string;
  session_id: string;
  usage?: Usage;
  cost?: Cost;
  receipt?: Receipt;
  offchain?: Completion["offchain"];
  [k: string]: unknown;
}

export interface CreateSessionRequest {
  session_id?: string;
  name?: string;
  metadata?: Record<string, string | number | boolean | null>;
  model?: string;
  min_miners?: number;
  max_miners?: number;
  redundancy?: number;
  consensus?: "auto" | "exact" | "similarity";
  validator_count?: number;
  dispersion_threshold?: number;
  embedding_model?: string;
  best_effort?: boolean;
  mode?: "ephemeral" | "dedicated";
  dedicated_miners?: string[];
  task_timeout?: number;
  ack_timeout?: number;
  deposit?: number;
}

export interface Session {
  id: string;
  name: string;
  active: boolean;
  owner: string;
  model: string;
  mode: string;
  redundancy: number;
  miners_count: number;
  created_at: number;
  updated_at: number;
  config?: SessionConfig;
  usage?: SessionUsage;
  [k: string]: unknown;
}

export interface RouterInfo {
  name: string;
  version: string;
  address: string | null;
  receipt_signer: string;
  receipt_domain: { name: string; version: string; chainId: number; verifyingContract?: string };
  active_sessions: number;
  total_sessions: number;
  node_stats: { dedicated_count: number; ephemeral_count: number; total_count: number };
}

/** Delegate, validate and factcheck answers (`/api/v{1,2,3}/delegate|validate`, `/api/v1/factcheck`). */
export interface WorkAnswer {
  request_id: string;
  status: string;
  consensus?: Record<string, unknown>;
  replicas?: Record<string, unknown>[];
  receipt?: Receipt;
  cost?: Cost;
  [k: string]: unknown;
}

export interface EmbeddingsRequest {
  input: string | string[];
  model?: string;
  session_id?: string;
  [k: string]: unknown;
}
