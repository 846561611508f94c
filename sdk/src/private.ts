import { deriveTaskKey, envelopeInfo, fromHex, openPayload } from "../../shared/payload-crypto.ts";
import type { Http } from "./http.ts";

// Private results opened on the client. A private task's miners seal their result under the task key
// (AES-256-GCM envelope, shared/payload-crypto.ts) and the router stores only that ciphertext. The SDK fetches the
// ciphertext (never `?decrypt=true`), derives the task key from the session key it holds and opens it locally: the
// result's plaintext never leaves the router's storage or crosses the wire. The session key is fetched once per
// session and key version (POST /api/v1/auth/payload_enc_key/session, owner only) and kept in memory.
//
// What this does not change: the router derives every payload key from its seeds (PAYLOAD_KEY_SEEDS) and receives
// the prompt in plaintext to seal it, so the operator of the router can read both. The README says who reads what.

export class PrivatePayloads {
  readonly #http: Http;
  readonly #sessionKeys = new Map<string, Promise<Uint8Array>>();

  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Lets these miners fetch the session's (or one task's) keys: a private task runs only on allowlisted miners
   * (PUT /api/v1/auth/payload_allowlist; `replace` drops the others).
   */
  async allow(
    sessionId: string,
    miners: string[],
    opts: { taskId?: string; mode?: "add" | "replace" } = {},
  ): Promise<{ session: string[] }> {
    const body = { session_id: sessionId, miners, mode: opts.mode ?? "add", ...(opts.taskId ? { task_id: opts.taskId } : {}) };
    return (await this.#http.json<{ session: string[] }>("/api/v1/auth/payload_allowlist", { method: "PUT", body })).body;
  }

  /** The session key (32 bytes) for `version` (default: the current one). */
  sessionKey(sessionId: string, version?: number): Promise<Uint8Array> {
    const id = `${sessionId}#${version ?? "current"}`;
    let key = this.#sessionKeys.get(id);
    if (!key) {
      key = this.#http
        .json<{ key: string }>("/api/v1/auth/payload_enc_key/session", {
          body: { session_id: sessionId, ...(version ? { key_version: version } : {}) },
        })
        .then(({ body }) => fromHex(body.key));
      key.catch(() => this.#sessionKeys.delete(id));
      this.#sessionKeys.set(id, key);
    }
    return key;
  }

  /** The result stored under `urn`, opened with the task key; the stored bytes as UTF-8 when not encrypted. */
  async openResult(sessionId: string, taskId: string, urn: string): Promise<string> {
    const res = await this.#http.response(`/api/v3/offchain/result/${encodeURIComponent(urn)}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (res.headers.get("x-payload-encrypted") !== "1") return new TextDecoder().decode(bytes);
    const info = envelopeInfo(bytes);
    if (!info) throw new Error(`result ${urn} is marked encrypted but is not an envelope`);
    const taskKey = await deriveTaskKey(await this.sessionKey(sessionId, info.version), sessionId, taskId);
    const key = info.scope === "task" ? taskKey : await this.sessionKey(sessionId, info.version);
    return new TextDecoder().decode(await openPayload(key, bytes, { kind: "result", sessionId, taskId }));
  }
}
