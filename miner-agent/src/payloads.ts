import type { PrivateKeyAccount } from "viem/accounts";
import { PromptSpec } from "../../shared/generation.ts";
import { fromBase64, fromHex, openPayload, sealPayload, sha256Hex, toBase64 } from "../../shared/payload-crypto.ts";
import { OffchainResultResponse, type PayloadDescriptor, PayloadKeyResponse, parseUrn } from "../../shared/payloads.ts";
import type { AssignMessage } from "../../shared/protocol.ts";
import { offchainResultTypedData, resultHash, type SigningDomain } from "../../shared/signing.ts";
import type { TokenSource } from "./ws-channel.ts";

// Off-chain and private tasks on the miner side (v2/v3): fetch the prompt a URN names through the router with
// our miner token, get the task key when the task is private (only allowlisted miners get one), open the
// envelope, and after inference write the result through the signed route — sealed under the task key when
// private — so the commit can carry its URN. The precommit still covers the plaintext result.

const HTTP_TIMEOUT_MS = 30_000;
const enc = new TextEncoder();

/** A refusal that asking again will not change (not allowlisted, not our task): the task is released. */
export class PayloadError extends Error {
  override name = "PayloadError";
  status: number | undefined;
  code: string;
  constructor(message: string, status: number | undefined, code: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export interface PayloadClientOptions {
  baseUrl: string;
  tokens: TokenSource;
  account: PrivateKeyAccount;
  /** The signing domain of the router we registered with (shared/signing.ts): result writes are signed for it. */
  domain: () => SigningDomain;
  fetch?: typeof fetch;
}

export class PayloadClient {
  readonly #opts: PayloadClientOptions;
  readonly #fetch: typeof fetch;
  /** Task keys by `sid/tid/version` (a task's prompt and result use the same key). */
  readonly #keys = new Map<string, Promise<Uint8Array>>();

  constructor(opts: PayloadClientOptions) {
    this.#opts = opts;
    this.#fetch = opts.fetch ?? fetch;
  }

  /** The task's real input: the assign's, or the off-chain prompt (checked against its URN, opened if sealed). */
  async input(sessionId: string, assign: AssignMessage, signal?: AbortSignal): Promise<PromptSpec> {
    const payload = assign.payload;
    if (!payload?.prompt_urn) return assign.input;
    const urn = parseUrn(payload.prompt_urn);
    if (urn?.kind !== "prompt" || urn.session !== sessionId || urn.task !== assign.task_id) {
      throw new PayloadError(`assign names a prompt URN of another task: ${payload.prompt_urn}`, undefined, "bad_urn");
    }
    // The key request (private tasks) runs alongside the fetch.
    const key = payload.encrypted ? this.#taskKey(sessionId, assign.task_id, payload, signal) : null;
    key?.catch(() => {}); // awaited below; a fetch failure must not leave it unhandled
    const res = await this.#call("GET", `/api/v3/offchain/payload/${encodeURIComponent(payload.prompt_urn)}`, undefined, signal);
    const stored = new Uint8Array(await res.arrayBuffer());
    if ((await sha256Hex(stored)) !== urn.sha256) throw new PayloadError("payload does not hash to its URN", res.status, "bad_payload");
    const plain = key ? await openPayload(await key, stored, { kind: "prompt", sessionId, taskId: assign.task_id }) : stored;
    const parsed = PromptSpec.safeParse(JSON.parse(new TextDecoder().decode(plain)));
    if (!parsed.success) throw new PayloadError("off-chain prompt is not a prompt spec", res.status, "bad_payload");
    return parsed.data;
  }

  /** Whether this result goes off-chain: the task says so (private, or offchain policy), or it is too large. */
  static offchainResult(assign: AssignMessage, text: string): boolean {
    const p = assign.payload;
    if (!p) return false;
    return p.encrypted || p.result_policy === "offchain" || enc.encode(text).length > p.inline_limit;
  }

  /** Writes the result through the signed route (sealed when private) and returns its URN. */
  async writeResult(sessionId: string, assign: AssignMessage, text: string, signal?: AbortSignal): Promise<string> {
    const payload = assign.payload!;
    const plain = enc.encode(text);
    const content = payload.encrypted
      ? await sealPayload(
          await this.#taskKey(sessionId, assign.task_id, payload, signal),
          plain,
          { scope: "task", version: payload.key_version ?? 1 },
          {
            kind: "result",
            sessionId,
            taskId: assign.task_id,
          },
        )
      : plain;
    const contentHash = `0x${await sha256Hex(content)}` as `0x${string}`;
    const signature = await this.#opts.account.signTypedData(
      offchainResultTypedData(
        { session: sessionId, task: assign.task_id, miner: this.#opts.account.address, content: contentHash },
        this.#opts.domain(),
      ),
    );
    const res = await this.#call(
      "POST",
      "/api/v3/offchain/result",
      {
        session_id: sessionId,
        task_id: assign.task_id,
        content: toBase64(content),
        content_hash: contentHash,
        signature,
        // A client-sealed task's router records this unopened (the precommit binds us to it all the same).
        ...(payload.encrypted ? { result_hash: resultHash(text) } : {}),
      },
      signal,
    );
    const body = OffchainResultResponse.parse(await res.json());
    // The router hashed the plaintext it stored: it must be the result we precommit.
    if (body.result_hash !== resultHash(text)) throw new PayloadError("router recorded another result hash", res.status, "bad_response");
    return body.urn;
  }

  /** A private verified task's token ids, sealed under the task key for allowlisted validators (base64). */
  async sealTokenIds(sessionId: string, assign: AssignMessage, ids: readonly number[], signal?: AbortSignal): Promise<string> {
    const payload = assign.payload!;
    const key = await this.#taskKey(sessionId, assign.task_id, payload, signal);
    const bytes = new Uint8Array(Uint32Array.from(ids).buffer); // little-endian, as the protocol says
    const info = { scope: "task" as const, version: payload.key_version ?? 1 };
    return toBase64(await sealPayload(key, bytes, info, { kind: "token_ids", sessionId, taskId: assign.task_id }));
  }

  /** A validator's side: opens a private task's sealed token ids with the task key (allowlisted miners only get it). */
  async openTokenIds(
    sessionId: string,
    taskId: string,
    payload: PayloadDescriptor,
    sealed: string,
    signal?: AbortSignal,
  ): Promise<number[]> {
    const key = await this.#taskKey(sessionId, taskId, payload, signal);
    // With the key in hand, ids that do not open are the replica's doing (bad_sealed_ids), not the validator's.
    const bytes = await openPayload(key, fromBase64(sealed), { kind: "token_ids", sessionId, taskId }).catch(() => null);
    if (!bytes || bytes.length % 4 !== 0)
      throw new PayloadError("sealed token ids do not open with the task key", undefined, "bad_sealed_ids");
    return [...new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))];
  }

  #taskKey(sessionId: string, taskId: string, payload: PayloadDescriptor, signal?: AbortSignal): Promise<Uint8Array> {
    const version = payload.key_version;
    const k = `${sessionId}/${taskId}/${version ?? "current"}`;
    let key = this.#keys.get(k);
    if (!key) {
      key = this.#call(
        "POST",
        "/api/v1/auth/payload_enc_key/task",
        { session_id: sessionId, task_id: taskId, ...(version ? { key_version: version } : {}) },
        signal,
      ).then(async (res) => fromHex(PayloadKeyResponse.parse(await res.json()).key));
      key.catch(() => this.#keys.delete(k));
      this.#keys.set(k, key);
      while (this.#keys.size > 256) this.#keys.delete(this.#keys.keys().next().value!);
    }
    return key;
  }

  async #call(method: "GET" | "POST", path: string, body: unknown, signal?: AbortSignal, retried = false): Promise<Response> {
    const token = await this.#opts.tokens.token();
    const timeout = AbortSignal.timeout(HTTP_TIMEOUT_MS);
    const res = await this.#fetch(this.#opts.baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    if (res.status === 401 && !retried) {
      this.#opts.tokens.invalidate(token); // expired or the router's secret changed: register again, once
      return this.#call(method, path, body, signal, true);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      let code = `http_${res.status}`;
      let message = text.slice(0, 300);
      try {
        const err = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
        code = err?.code ?? code;
        message = err?.message ?? message;
      } catch {
        /* not the router's error envelope */
      }
      throw new PayloadError(
        `${method} ${path.split("/").slice(0, 5).join("/")}: HTTP ${res.status} ${code}: ${message}`,
        res.status,
        code,
      );
    }
    return res;
  }
}
