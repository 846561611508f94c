import type { ErrorCode } from "../../shared/errors.ts";

// What a call can throw. The router answers every error as `{request_id, error: {code, message, details}}`
// (`/openai/*`: OpenAI's `{error: {message, type, code, param}}`); EdgeApiError carries those fields, so callers
// switch on `err.code` and quote `err.requestId` to the operator. Transport failures and failed verification
// are their own classes.

export type { ErrorCode };

/** Codes worth asking again: nothing was done (rate limits, no miner yet, a deployment not ready). */
const RETRYABLE: ReadonlySet<string> = new Set(["rate_limited", "no_miner_available", "chain_unavailable", "trial_quota_exceeded"]);

export class EdgeError extends Error {
  override name = "EdgeError";
}

/** The router answered with an error. */
export class EdgeApiError extends EdgeError {
  override name = "EdgeApiError";
  readonly status: number;
  /** The router's error code (shared/errors.ts; `/openai/*` routes also answer OpenAI's own codes). */
  readonly code: ErrorCode | (string & {});
  /** The router's request id (`X-Request-ID`): what its log lines carry. */
  readonly requestId: string | undefined;
  readonly details: unknown;
  /** Seconds the router asked to wait (`Retry-After`), when it said. */
  readonly retryAfterS: number | undefined;

  constructor(init: { status: number; code: string; message: string; requestId?: string; details?: unknown; retryAfterS?: number }) {
    super(`${init.code}: ${init.message}${init.requestId ? ` (request ${init.requestId})` : ""}`);
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.details = init.details;
    this.retryAfterS = init.retryAfterS;
  }

  /** Asking again may succeed: the router did no work (429, 503 no_miner_available, …). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code) || this.status === 429;
  }
}

/** No answer came (connection refused or reset, DNS, the client's timeout). */
export class EdgeNetworkError extends EdgeError {
  override name = "EdgeNetworkError";
  /** True when the request never reached the router (connection refused, DNS): safe to send again. */
  readonly beforeSend: boolean;
  constructor(message: string, init: { cause?: unknown; beforeSend: boolean }) {
    super(message, { cause: init.cause });
    this.beforeSend = init.beforeSend;
  }
}

/** `verify: true` and the evidence does not hold: the answer must not be trusted. */
export class VerificationError extends EdgeError {
  override name = "VerificationError";
  /** Each check that failed, in words. */
  readonly problems: string[];
  readonly requestId: string | undefined;
  constructor(problems: string[], requestId?: string) {
    super(`verification failed${requestId ? ` (request ${requestId})` : ""}: ${problems.join("; ")}`);
    this.problems = problems;
    this.requestId = requestId;
  }
}
