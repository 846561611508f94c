import { z } from "zod";
import { ENVELOPE_HEADER_BYTES, envelopeInfo, fromBase64, sha256Hex, toHex } from "../../shared/payload-crypto.ts";
import { type PayloadDescriptor, parseUrn, promptUrn, type SealedReservation } from "../../shared/payloads.ts";
import { parseTaskId, TaskId } from "../../shared/task-id.ts";
import { ApiError } from "./api-error.ts";
import { completionRequest } from "./completion-request.ts";
import type { OffchainAnswer } from "./offchain-completion.ts";
import { resultUrnOf } from "./offchain-completion.ts";
import { completionResponse } from "./openai.ts";
import { currentKeyVersion, parseSeeds, taskKey } from "./payload-keys.ts";
import { inlineLimit, payloadMax } from "./payload-store.ts";
import { CompletionBody } from "./schemas.ts";
import { submitError, submitTask } from "./submit.ts";
import { catalogQueue } from "./tenancy.ts";

// Private prompts sealed by the client (POST /api/v1/sessions/:sid/reservations, then POST /api/v3/completions/:sid/sealed). The client
// reserves a task id and gets that one task's key (HKDF of the session key with the task id: it opens nothing
// else), seals its PromptSpec JSON under it (shared/payload-crypto.ts, AAD "prompt:<sid>:<tid>") and sends only
// the envelope. The router checks the envelope's shape and size — it cannot and does not open it — stores it in
// R2 under the reserved task and submits the task; miners fetch and open it as a router-sealed prompt. The
// reservation is the owner's, bound to a token only the reserving client got, usable once, memory-only in the
// SessionQueue and lapsing after 10 minutes (session-queue/sealed-reservations.ts).

/** AES-GCM's tag: an envelope is its header, the ciphertext (as long as the plaintext) and this. */
const TAG_BYTES = 16;
/** The smallest PromptSpec JSON: `{"prompt":"x"}`. */
const MIN_SPEC_BYTES = 14;

export const ReserveBody = z.object({}).strict();

export const SealedCompletionBody = CompletionBody.omit({
  prompt: true,
  prompt_type: true,
  prompt_template: true,
  stream: true,
  session_id: true,
})
  .extend({
    /** The id from the reservation; the envelope's additional data names it. */
    task_id: TaskId,
    /** The reservation's token (32 hex digits), given only to the client that reserved the id. */
    reservation: z.string().regex(/^[0-9a-f]{32}$/, "the reservation token is 32 lowercase hex digits"),
    /** Base64 of the prompt's envelope: the PromptSpec JSON sealed under the task key. Never the plaintext. */
    envelope: z
      .string()
      .min(1)
      .max(16 * 1024 * 1024),
  })
  .strict();
export type SealedCompletionBody = z.infer<typeof SealedCompletionBody>;

const maxEnvelope = (env: Env) => payloadMax(env) + ENVELOPE_HEADER_BYTES + TAG_BYTES;

/** Reserves a task id in the caller's own session and hands over that task's key. */
export async function reserveSealed(env: Env, owner: string, sessionId: string): Promise<SealedReservation> {
  if (currentKeyVersion(parseSeeds(env.PAYLOAD_KEY_SEEDS)) === null) {
    throw new ApiError("invalid_request", "private payloads are not configured on this router (no PAYLOAD_KEY_SEEDS)");
  }
  const queue = await catalogQueue(env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  const r = await queue.reserveSealed(owner);
  if (!r.ok) throw ApiError.from(r.error);
  const task = String(r.task_id);
  const k = await taskKey(env, sessionId, task);
  return {
    object: "sealed_reservation",
    session_id: sessionId,
    task_id: task,
    reservation: r.token,
    expires_at: Math.floor(r.expires_at / 1000),
    key: toHex(k.key),
    key_version: k.version,
    algorithm: "AES-256-GCM",
    aad: `prompt:${sessionId}:${task}`,
    max_envelope_bytes: maxEnvelope(env),
  };
}

/** The envelope's bytes and key version, once its shape and size hold (its content stays unread). */
function checkEnvelope(env: Env, b64: string): { bytes: Uint8Array; version: number } {
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(b64);
  } catch {
    throw new ApiError("invalid_request", "envelope is not base64", [{ path: "envelope", message: "invalid base64" }]);
  }
  if (bytes.length > maxEnvelope(env)) {
    throw new ApiError("payload_too_large", `envelope is ${bytes.length} bytes; the limit is ${maxEnvelope(env)}`, {
      max_bytes: maxEnvelope(env),
    });
  }
  const info = envelopeInfo(bytes);
  if (info?.scope !== "task" || bytes.length < ENVELOPE_HEADER_BYTES + TAG_BYTES + MIN_SPEC_BYTES) {
    throw new ApiError("invalid_request", "envelope is not a task-key payload envelope (the prompt must be sealed on the client)", [
      { path: "envelope", message: "expected EPE1, task scope, IV, ciphertext and tag" },
    ]);
  }
  if (!parseSeeds(env.PAYLOAD_KEY_SEEDS).has(info.version)) {
    throw new ApiError("invalid_request", `envelope names key version ${info.version}, which this router does not have`, [
      { path: "envelope", message: "unknown key version" },
    ]);
  }
  return { bytes, version: info.version };
}

/** Stores a client-sealed prompt under its reserved task and runs the task; refusals are thrown as ApiError. */
export async function completeSealed(
  env: Env,
  who: { owner: string; requestId: string },
  sessionId: string,
  body: SealedCompletionBody,
): Promise<OffchainAnswer> {
  const envelope = checkEnvelope(env, body.envelope);
  const taskId = parseTaskId(body.task_id)!;
  const queue = await catalogQueue(env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  const refused = await queue.takeSealed(who.owner, taskId, body.reservation);
  if (refused) throw ApiError.from(refused);

  const urn = promptUrn(sessionId, body.task_id, await sha256Hex(envelope.bytes));
  const key = parseUrn(urn)!.key;
  await env.PAYLOADS.put(key, envelope.bytes, {
    customMetadata: { encrypted: "1", key_version: String(envelope.version), sealed_by: "client" },
  });
  const payload: PayloadDescriptor = {
    prompt_urn: urn,
    prompt_bytes: envelope.bytes.length - ENVELOPE_HEADER_BYTES - TAG_BYTES,
    encrypted: true,
    key_version: envelope.version,
    result_policy: "offchain",
    inline_limit: inlineLimit(env),
    sealed_by: "client",
  };
  const inner = { ...body, prompt: "", prompt_type: 0 as const, stream: false };
  const outcome = await submitTask(
    env,
    { session_id: sessionId, configured: false },
    { ...completionRequest(inner, who.owner), input: { prompt: "", prompt_type: 0 }, stream: false, payload, task_id: taskId },
  );
  if (!outcome.ok) {
    if (!outcome.task) await env.PAYLOADS.delete(key); // no task will read it
    throw submitError(outcome);
  }
  if (outcome.stream) throw new ApiError("internal_error", "a sealed task was answered as a stream");
  const base = completionResponse(outcome.task, who.requestId);
  const resultUrn = resultUrnOf(outcome.task);
  return {
    stream: false,
    streamingDisabled: false,
    task: outcome.task,
    body: {
      ...base,
      choices: [{ ...base.choices[0], text: resultUrn ? "" : base.choices[0].text }],
      offchain: {
        prompt_urn: urn,
        result_urn: resultUrn,
        encrypted: true,
        key_version: envelope.version,
        result_policy: "offchain",
        sealed_by: "client",
      },
    },
  };
}
