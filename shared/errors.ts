// Stable error codes shared by router, Durable Objects and clients. The HTTP status lives with the code so
// every layer maps a failure the same way.
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  deposit_exhausted: 402,
  forbidden: 403,
  not_found: 404,
  session_not_found: 404,
  task_not_found: 404,
  session_required: 400,
  session_exists: 409,
  conflict: 409,
  no_miner_available: 503,
  task_failed: 502,
  timeout: 504,
  internal_error: 500,
  /** Delegate/validate/factcheck: a needed session pool, session or retriever is not configured. */
  configuration_error: 503,
  /** Every replica of a fanned-out request failed (each replica's payload and error are in the body). */
  all_replicas_failed: 502,
  /**
   * Replicas disagreed without a quorum: a v3 request's disagreement_policy is fail_hard, or a redundant task
   * found no quorum among its replicas before its deadline (unless its session opted into best_effort).
   */
  no_consensus: 409,
  /** A replica's answer did not follow the requested grammar (e.g. no parsable verdict). */
  invalid_output: 502,
  /** The configured factcheck retriever did not answer usable documents. */
  retriever_failed: 502,
  /** The prompt (at least its lower-bound token count) plus max_tokens cannot fit the session model's context. */
  context_length_exceeded: 400,
  /** A per-key, per-IP or per-miner-token rate limit was reached (the response carries Retry-After). */
  rate_limited: 429,
  /** A trial route's quota for this client IP is used up (TRIAL_QUOTA; the response carries Retry-After). */
  trial_quota_exceeded: 429,
  /** The request body is larger than the route takes. */
  payload_too_large: 413,
  /** A client deadline (timeout, precommit_timeout, a session's task_timeout) below the task's floor, named in details. */
  deadline_too_short: 400,
  /** The owner has MAX_SESSIONS_PER_OWNER sessions already (sessions are never deleted; shared ones count for nobody). */
  session_quota_exceeded: 403,
  /** The task's owner cancelled it (POST /api/v1/tasks/:sid/:tid/cancel): what its waiters and its view carry. */
  task_cancelled: 409,
  /** A cancel of a task that had already finished otherwise (closed, or failed for another reason). */
  task_finished: 409,
  /** The owner already holds the most open legacy MCP streams (GET /sse) a key may; one must close first. */
  mcp_stream_limit: 429,
  /** x402: the route needs a payment, or the one sent was refused (requirements in PAYMENT-REQUIRED and details). */
  payment_required: 402,
  /** A managed API key has used its token budget (nothing was submitted). */
  budget_exhausted: 402,
  /** A managed API key names (or would use) a model outside its allowed models. */
  model_not_allowed: 403,
  /** The configured chain (CHAIN_RPC_URL) did not answer: e.g. a miner's stake could not be read, so it is not registered. */
  chain_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** JSON data, two levels deep: what crosses Durable Object RPC (whose types reject `unknown`) and HTTP. */
export type JsonPrimitive = string | number | boolean | null;
type Json1 = JsonPrimitive | JsonPrimitive[] | { [key: string]: JsonPrimitive };
export type JsonValue = Json1 | Json1[] | { [key: string]: Json1 };

/** A failure as it travels between Durable Objects and the router (RPC keeps plain objects intact). */
export interface Failure {
  code: ErrorCode;
  message: string;
  details?: JsonValue;
}
