import { EdgeApiError, EdgeNetworkError } from "./errors.ts";

// One HTTP call with the client's key, timeout and retries. A retry happens only where the router did no work: a
// retryable error code (429, 503 no_miner_available…) or a connection that never opened. Backoff doubles from
// `baseDelayMs` with full jitter, capped at `maxDelayMs`, and waits at least what `Retry-After` asks.

export interface RetryOptions {
  /** Attempts after the first (default 3; 0 disables retries). */
  retries?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export interface HttpOptions extends RetryOptions {
  baseUrl: string;
  apiKey?: string;
  /** Per attempt, ms (default 120000). A streamed answer's body is not bounded by it. */
  timeoutMs?: number;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}

export interface CallInit {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  headers?: Record<string, string>;
  /** No Authorization header (public routes). */
  anonymous?: boolean;
  signal?: AbortSignal;
  /** The response body is a stream the caller reads (SSE): no timeout on the body. */
  raw?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Http {
  readonly baseUrl: string;
  readonly #opts: HttpOptions;
  readonly #fetch: typeof fetch;

  constructor(opts: HttpOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.#opts = opts;
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  /** JSON answer of a call; throws EdgeApiError / EdgeNetworkError. */
  async json<T>(path: string, init: CallInit = {}): Promise<{ body: T; headers: Headers }> {
    const res = await this.response(path, init);
    const text = await res.text();
    try {
      return { body: JSON.parse(text) as T, headers: res.headers };
    } catch {
      throw new EdgeApiError({
        status: res.status,
        code: "invalid_response",
        message: `not JSON: ${text.slice(0, 200)}`,
        requestId: requestIdOf(res),
      });
    }
  }

  /** The successful Response (retried as described above); error answers become EdgeApiError. */
  async response(path: string, init: CallInit = {}): Promise<Response> {
    const retries = this.#opts.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#once(path, init);
      } catch (err) {
        const wait = this.#retryDelay(err, attempt);
        if (attempt >= retries || wait === null || init.signal?.aborted) throw err;
        await sleep(wait);
      }
    }
  }

  #retryDelay(err: unknown, attempt: number): number | null {
    const retryable = (err instanceof EdgeApiError && err.retryable) || (err instanceof EdgeNetworkError && err.beforeSend);
    if (!retryable) return null;
    const base = this.#opts.baseDelayMs ?? 250;
    const cap = this.#opts.maxDelayMs ?? 8_000;
    const backoff = Math.random() * Math.min(cap, base * 2 ** attempt);
    const asked = err instanceof EdgeApiError && err.retryAfterS !== undefined ? err.retryAfterS * 1000 : 0;
    return Math.min(cap, Math.max(backoff, asked));
  }

  async #once(path: string, init: CallInit): Promise<Response> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(init.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { ...this.#opts.headers, ...init.headers };
    if (!init.anonymous && this.#opts.apiKey) headers.authorization = `Bearer ${this.#opts.apiKey}`;
    if (init.body !== undefined) headers["content-type"] = "application/json";
    const timeout = AbortSignal.timeout(this.#opts.timeoutMs ?? 120_000);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method: init.method ?? (init.body === undefined ? "GET" : "POST"),
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        // A stream is read after this returns: only its headers are bounded by the timeout.
        signal: init.raw ? (init.signal ?? undefined) : signal,
      });
    } catch (err) {
      throw new EdgeNetworkError(`${url.pathname}: ${describe(err)}`, { cause: err, beforeSend: neverSent(err) });
    }
    if (res.ok) return res;
    throw await apiError(res);
  }
}

/** Builds the typed error from an error answer (the router's shape, or OpenAI's under /openai). */
export async function apiError(res: Response): Promise<EdgeApiError> {
  const text = await res.text().catch(() => "");
  let body: { request_id?: string; error?: { code?: string | null; type?: string; message?: string; details?: unknown; param?: unknown } } =
    {};
  try {
    body = JSON.parse(text);
  } catch {}
  const e = body.error ?? {};
  const retryAfter = Number(res.headers.get("retry-after"));
  return new EdgeApiError({
    status: res.status,
    code: e.code ?? e.type ?? `http_${res.status}`,
    message: e.message ?? (text.slice(0, 200) || res.statusText),
    requestId: body.request_id ?? requestIdOf(res),
    details: e.details ?? (e.param !== undefined ? { param: e.param } : undefined),
    retryAfterS: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
  });
}

function requestIdOf(res: Response): string | undefined {
  return res.headers.get("x-request-id") ?? undefined;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ? `${err.message} (${cause.code})` : err.message;
}

/** Connection-level failures where no byte of the request reached the router. */
function neverSent(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } })?.cause?.code;
  return code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN";
}
