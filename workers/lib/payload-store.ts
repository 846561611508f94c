import type { PromptSpec } from "../../shared/generation.ts";
import { envelopeInfo, openPayload, sealPayload, sha256Hex } from "../../shared/payload-crypto.ts";
import { type ParsedUrn, parseUrn, promptUrn, resultUrn } from "../../shared/payloads.ts";
import { ApiError } from "./api-error.ts";
import { taskKey } from "./payload-keys.ts";

// R2 side of off-chain payloads: prompts the router writes for v2/v3 tasks, results miners write through
// the signed route, and the check a SessionQueue runs when a commit names a result URN. Objects are
// content-addressed (shared/payloads.ts); an encrypted object is an AES-GCM envelope under its task key and
// R2 never sees its plaintext.

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

export const DEFAULT_INLINE_LIMIT = 65_536;
export const DEFAULT_PAYLOAD_MAX = 8 * 1024 * 1024;

export const inlineLimit = (env: Env) => numberVar(env.INLINE_PAYLOAD_LIMIT, DEFAULT_INLINE_LIMIT);
export const payloadMax = (env: Env) => numberVar(env.PAYLOAD_MAX_BYTES, DEFAULT_PAYLOAD_MAX);

function numberVar(raw: string | undefined, fallback: number): number {
  const n = Number(raw);
  return raw !== undefined && raw !== "" && Number.isFinite(n) && n >= 0 ? n : fallback;
}

/** A prompt as stored: its PromptSpec as JSON (so a template is as private as the prompt). */
export function promptBytes(spec: PromptSpec): Uint8Array {
  return enc.encode(JSON.stringify(spec));
}

/** Writes a task's prompt; encrypted under the task key (current seed version) when `encrypt`. */
export async function storePrompt(
  env: Env,
  sessionId: string,
  taskId: string,
  plain: Uint8Array,
  encrypt: boolean,
): Promise<{ urn: string; key_version?: number; stored_bytes: number }> {
  let body = plain;
  let key_version: number | undefined;
  if (encrypt) {
    const k = await taskKey(env, sessionId, taskId);
    key_version = k.version;
    body = await sealPayload(k.key, plain, { scope: "task", version: k.version }, { kind: "prompt", sessionId, taskId });
  }
  const urn = promptUrn(sessionId, taskId, await sha256Hex(body));
  await env.PAYLOADS.put(parseUrn(urn)!.key, body, {
    customMetadata: { encrypted: encrypt ? "1" : "0", ...(key_version ? { key_version: String(key_version) } : {}) },
  });
  return { urn, key_version, stored_bytes: body.length };
}

/** Writes a miner's (already verified) result and returns its URN. */
export async function storeResult(
  env: Env,
  p: {
    sessionId: string;
    taskId: string;
    miner: string;
    content: Uint8Array;
    sha256: string;
    resultHash: string;
    encrypted: boolean;
    keyVersion?: number;
    signature: string;
  },
): Promise<string> {
  const urn = resultUrn(p.sessionId, p.taskId, p.miner, p.sha256);
  await env.PAYLOADS.put(parseUrn(urn)!.key, p.content, {
    customMetadata: {
      result_hash: p.resultHash,
      miner: p.miner.toLowerCase(),
      encrypted: p.encrypted ? "1" : "0",
      ...(p.keyVersion ? { key_version: String(p.keyVersion) } : {}),
      signature: p.signature,
    },
  });
  return urn;
}

/** The stored bytes a URN names, or null. */
export async function readObject(env: Env, urn: ParsedUrn): Promise<{ bytes: Uint8Array; encrypted: boolean } | null> {
  const obj = await env.PAYLOADS.get(urn.key);
  if (!obj) return null;
  return { bytes: new Uint8Array(await obj.arrayBuffer()), encrypted: obj.customMetadata?.encrypted === "1" };
}

/** Opens an envelope of this URN's task with the task key of the version the envelope names. */
export async function decryptObject(env: Env, urn: ParsedUrn, bytes: Uint8Array): Promise<Uint8Array> {
  const info = envelopeInfo(bytes);
  if (!info) throw new ApiError("invalid_request", "stored object is not an encryption envelope");
  const k = await taskKey(env, urn.session, urn.task, info.version);
  return openPayload(k.key, bytes, { kind: urn.kind, sessionId: urn.session, taskId: urn.task });
}

/** A result's text for its owner: read, decrypted when encrypted. */
export async function readResultText(env: Env, urnText: string): Promise<string> {
  const urn = parseUrn(urnText);
  if (!urn) throw new ApiError("invalid_request", "not a payload URN");
  const obj = await readObject(env, urn);
  if (!obj) throw new ApiError("not_found", `no object for ${urnText}`);
  return dec.decode(obj.encrypted ? await decryptObject(env, urn, obj.bytes) : obj.bytes);
}

export function utf8(bytes: Uint8Array): string {
  return dec.decode(bytes);
}
