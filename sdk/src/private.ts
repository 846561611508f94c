import { deriveTaskKey, envelopeInfo, fromHex, openPayload, sealPayload, toBase64 } from "../../shared/payload-crypto.ts";
import { parseUrn } from "../../shared/payloads.ts";
import { resultHash } from "../../shared/signing.ts";
import { VerificationError } from "./errors.ts";
import type { Http } from "./http.ts";
import type { Completion, SealedReservation } from "./types.ts";

// Private payloads on the client. Prompts: `reserve()` gets a task id in the caller's own session with that one
// task's key (POST /api/v1/sessions/:sid/reservations), `seal()` encrypts the PromptSpec JSON under it here
// (AES-256-GCM envelope, shared/payload-crypto.ts) and only that ciphertext is sent (…/:sid/sealed): the prompt's
// plaintext never reaches the router. Results: a private task's miners seal their result under the task key and
// the router stores only that ciphertext; the SDK fetches it (never `?decrypt=true`) and opens it here with the
// reservation's task key, or with a task key derived from the session key (fetched once per session and key
// version, owner only) for a task whose prompt the router sealed.
//
// What this does not change: the router derives every payload key from its seeds (PAYLOAD_KEY_SEEDS), so its
// operator could open what R2 holds. For a client-sealed task the router opens neither prompt nor result (a miner
// names its result's hash; checkOpenedResult holds the opened text to it); for a router-sealed one it opens each
// result once when a miner writes it. The README says who reads what.

/** A reserved task with its key as bytes. */
export interface TaskKeyHolder {
  task_id: string;
  key_version: number;
  keyBytes: Uint8Array;
}

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

  /** Reserves a task id for a prompt sealed here, with that task's key (owner's session only; lapses unused). */
  async reserve(sessionId: string, signal?: AbortSignal): Promise<SealedReservation & TaskKeyHolder> {
    const { body } = await this.#http.json<SealedReservation>(`/api/v1/sessions/${encodeURIComponent(sessionId)}/reservations`, {
      body: {},
      signal,
    });
    return { ...body, keyBytes: fromHex(body.key) };
  }

  /** The envelope (base64) of a prompt spec sealed under the reserved task's key, bound to its session and task. */
  async seal(sessionId: string, task: TaskKeyHolder, spec: { prompt: string; prompt_type?: number; prompt_template?: string }) {
    const json = JSON.stringify({
      prompt: spec.prompt,
      prompt_type: spec.prompt_type ?? 0,
      ...(spec.prompt_template !== undefined ? { prompt_template: spec.prompt_template } : {}),
    });
    const envelope = await sealPayload(
      task.keyBytes,
      new TextEncoder().encode(json),
      { scope: "task", version: task.key_version },
      { kind: "prompt", sessionId, taskId: task.task_id },
    );
    return toBase64(envelope);
  }

  /**
   * The result stored under `urn`, opened with the task key (`task`'s when given and of the envelope's version,
   * else derived from the session key); the stored bytes as UTF-8 when not encrypted.
   */
  async openResult(sessionId: string, taskId: string, urn: string, task?: TaskKeyHolder): Promise<string> {
    const res = await this.#http.response(`/api/v3/offchain/result/${encodeURIComponent(urn)}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (res.headers.get("x-payload-encrypted") !== "1") return new TextDecoder().decode(bytes);
    const info = envelopeInfo(bytes);
    if (!info) throw new Error(`result ${urn} is marked encrypted but is not an envelope`);
    let key: Uint8Array;
    if (info.scope === "task" && task?.task_id === taskId && task.key_version === info.version) key = task.keyBytes;
    else if (info.scope === "task") key = await deriveTaskKey(await this.sessionKey(sessionId, info.version), sessionId, taskId);
    else key = await this.sessionKey(sessionId, info.version);
    return new TextDecoder().decode(await openPayload(key, bytes, { kind: "result", sessionId, taskId }));
  }
}

/**
 * A client-sealed task's router records each result's hash without opening it (the miner names it), so the text
 * opened here must hash to what the miner behind the URN committed to: otherwise VerificationError, verify or not.
 */
export function checkOpenedResult(answer: Completion, urn: string, text: string): void {
  const parsed = parseUrn(urn);
  const miner = parsed?.kind === "result" ? parsed.miner : null;
  const committed = answer.miners?.find((m) => m.address.toLowerCase() === miner)?.hash ?? null;
  if (committed !== resultHash(text)) {
    throw new VerificationError(
      [`the result opened from ${urn} does not hash to what its miner committed (${committed ?? "none"})`],
      answer.request_id,
    );
  }
}
