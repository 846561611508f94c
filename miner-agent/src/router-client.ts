import type { PrivateKeyAccount } from "viem/accounts";
import type { z } from "zod";
import { MinerChallengeResponse, type MinerRegisterRequest, MinerRegisterResponse } from "../../shared/api.ts";
import { registrationMessage } from "../../shared/signing.ts";

// The miner's REST calls to the router: challenge → sign → register. Everything else goes over WebSockets.

const HTTP_TIMEOUT_MS = 15_000;

/** A failed router call. `retryable` is false only for answers that will not change by asking again. */
export class RouterError extends Error {
  override name = "RouterError";
  status: number | undefined;
  code: string;
  requestId: string | undefined;
  details: unknown;
  retryable: boolean;

  constructor(message: string, init: { status?: number; code: string; requestId?: string; details?: unknown; retryable: boolean }) {
    super(message);
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.details = init.details;
    this.retryable = init.retryable;
  }
}

export type RegistrationInfo = Omit<MinerRegisterRequest, "address" | "nonce" | "signature">;

export class RouterClient {
  readonly baseUrl: string;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, fetchImpl: typeof fetch = fetch) {
    const url = new URL(baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`router URL must be http(s)://, got ${baseUrl}`);
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.#fetch = fetchImpl;
  }

  /** ws(s):// URL for a router path (the same host and path prefix as the REST base). */
  wsUrl(path: string): string {
    const url = new URL(this.baseUrl + path);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  challenge(address: string, signal?: AbortSignal): Promise<MinerChallengeResponse> {
    return this.#post("/api/v1/miners/challenge", { address }, MinerChallengeResponse, signal);
  }

  register(body: MinerRegisterRequest, signal?: AbortSignal): Promise<MinerRegisterResponse> {
    return this.#post("/api/v1/miners/register", body, MinerRegisterResponse, signal);
  }

  async #post<T>(path: string, body: unknown, schema: z.ZodType<T>, signal?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(HTTP_TIMEOUT_MS);
    let res: Response;
    try {
      res = await this.#fetch(this.baseUrl + path, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = timeout.aborted ? "timed out" : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new RouterError(`POST ${path}: router unreachable (${why})`, { code: "unreachable", retryable: true });
    }
    const text = await res.text().catch(() => "");
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) throw errorFromResponse(path, res, json, text);
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new RouterError(`POST ${path}: unexpected response body: ${parsed.error.message.slice(0, 300)}`, {
        status: res.status,
        code: "bad_response",
        requestId: res.headers.get("x-request-id") ?? undefined,
        retryable: true,
      });
    }
    return parsed.data;
  }
}

function errorFromResponse(path: string, res: Response, json: unknown, text: string): RouterError {
  // The router's error envelope is {request_id, error: {code, message, details}}; anything else is reported raw.
  const env = json as { request_id?: unknown; error?: { code?: unknown; message?: unknown; details?: unknown } };
  const code = typeof env?.error?.code === "string" ? env.error.code : `http_${res.status}`;
  const message = typeof env?.error?.message === "string" ? env.error.message : text.slice(0, 200) || res.statusText || "no body";
  const requestId = (typeof env?.request_id === "string" ? env.request_id : undefined) ?? res.headers.get("x-request-id") ?? undefined;
  const details = env?.error?.details;
  const detailText = details === undefined ? "" : ` ${JSON.stringify(details).slice(0, 300)}`;
  const rid = requestId ? ` [request ${requestId}]` : "";
  // 4xx answers are about this request and will not change on retry — except auth/nonce expiry (a fresh
  // challenge fixes it), timeouts and rate limits.
  const retryable = res.status >= 500 || [401, 408, 409, 425, 429].includes(res.status);
  return new RouterError(`POST ${path}: HTTP ${res.status} ${code}: ${message}${detailText}${rid}`, {
    status: res.status,
    code,
    requestId,
    details,
    retryable,
  });
}

/**
 * One full registration: fetch a challenge, check it is exactly the registration message for our address, its
 * nonce and the router we connected to (its origin is ours: a router relaying another deployment's challenge
 * gets nothing signed), sign it (EIP-191), register. The answer names the deployment whose domain our precommits
 * and result writes are then signed for; it must be the one the challenge named.
 */
export async function registerMiner(
  client: RouterClient,
  account: PrivateKeyAccount,
  info: RegistrationInfo,
  signal?: AbortSignal,
): Promise<MinerRegisterResponse> {
  const address = account.address;
  const challenge = await client.challenge(address, signal);
  const origin = new URL(client.baseUrl).origin;
  if (challenge.router.origin !== origin) {
    throw new RouterError(
      `router's challenge names origin ${challenge.router.origin}, but we connected to ${origin}; refusing to sign it`,
      {
        code: "challenge_mismatch",
        retryable: false,
      },
    );
  }
  const expected = registrationMessage(address, challenge.nonce, challenge.router);
  if (challenge.address.toLowerCase() !== address.toLowerCase() || challenge.message !== expected) {
    throw new RouterError(
      `router's challenge is not the registration message for ${address} (got ${JSON.stringify(challenge.message).slice(0, 200)}); refusing to sign it`,
      { code: "challenge_mismatch", retryable: false },
    );
  }
  const signature = await account.signMessage({ message: challenge.message });
  const res = await client.register({ address, nonce: challenge.nonce, signature, ...info }, signal);
  if (JSON.stringify(res.router) !== JSON.stringify(challenge.router)) {
    throw new RouterError("router registered us for another deployment than its challenge named", {
      code: "bad_response",
      retryable: true,
    });
  }
  if (res.address.toLowerCase() !== address.toLowerCase()) {
    throw new RouterError(`router registered ${res.address}, expected ${address}`, {
      code: "bad_response",
      retryable: true,
    });
  }
  return res;
}
