import { z } from "zod";
import { MAX_TASK_ID, TASK_ID_SOURCE } from "./task-id.ts";

// Off-chain payloads: what a task carries instead of an inline prompt, the URNs that name stored objects, and
// the REST bodies of the off-chain and key routes. Shared by the router and the miner agent.
//
// URNs are content-addressed (SHA-256 of the stored bytes: the ciphertext when encrypted) and name the
// session and task they belong to, so the router can authorize a fetch from the URN alone:
//   prompt  urn:edge:payload:<session>:<task>:<sha256>          R2 key payload/<session>/<task>/<sha256>
//   result  urn:edge:result:<session>:<task>:<miner>:<sha256>    R2 key result/<session>/<task>/<miner>/<sha256>

const SESSION = "[A-Za-z0-9_-]{1,64}";
const TASK = TASK_ID_SOURCE;
const SHA = "[0-9a-f]{64}";
const MINER = "0x[0-9a-f]{40}";
const PROMPT_URN = new RegExp(`^urn:edge:payload:(${SESSION}):(${TASK}):(${SHA})$`);
const RESULT_URN = new RegExp(`^urn:edge:result:(${SESSION}):(${TASK}):(${MINER}):(${SHA})$`);

export type ParsedUrn =
  | { kind: "prompt"; session: string; task: string; sha256: string; key: string }
  | { kind: "result"; session: string; task: string; miner: string; sha256: string; key: string };

export function promptUrn(session: string, task: string, sha256: string): string {
  return `urn:edge:payload:${session}:${task}:${sha256}`;
}

export function resultUrn(session: string, task: string, miner: string, sha256: string): string {
  return `urn:edge:result:${session}:${task}:${miner.toLowerCase()}:${sha256}`;
}

/** Parses a URN of ours (and gives its R2 key); null for anything else. */
export function parseUrn(urn: string): ParsedUrn | null {
  let m = PROMPT_URN.exec(urn);
  if (m) return { kind: "prompt", session: m[1], task: m[2], sha256: m[3], key: `payload/${m[1]}/${m[2]}/${m[3]}` };
  m = RESULT_URN.exec(urn);
  if (m) return { kind: "result", session: m[1], task: m[2], miner: m[3], sha256: m[4], key: `result/${m[1]}/${m[2]}/${m[3]}/${m[4]}` };
  return null;
}

export const Urn = z
  .string()
  .max(300)
  .refine((s) => parseUrn(s) !== null, "not a payload URN");

export const RESULT_POLICIES = ["inline", "offchain"] as const;
export type ResultPolicy = (typeof RESULT_POLICIES)[number];

/** What an off-chain or private task carries (in the assign and in the task record) besides its params. */
export const PayloadDescriptor = z.object({
  /** The prompt (its PromptSpec as JSON, or that JSON's envelope) went to R2; the assign's input is empty. */
  prompt_urn: Urn.optional(),
  /** Size of the prompt's plaintext JSON, bytes. */
  prompt_bytes: z.number().int().min(0).optional(),
  /** Prompt and result are AES-GCM envelopes under the task key (shared/payload-crypto.ts). */
  encrypted: z.boolean(),
  /** Seed version the task key is derived from (encrypted only). */
  key_version: z.number().int().min(1).optional(),
  /** `offchain`: the miner writes its result through /api/v3/offchain/result and commits the URN. */
  result_policy: z.enum(RESULT_POLICIES),
  /** A result longer than this many bytes goes off-chain whatever the policy. */
  inline_limit: z.number().int().min(0),
  /**
   * `client`: the client sealed the prompt (workers/lib/sealed-completion.ts) and the router opens neither it nor
   * the result: a miner's result write names the plaintext's keccak256 itself (`result_hash`).
   */
  sealed_by: z.literal("client").optional(),
});
export type PayloadDescriptor = z.infer<typeof PayloadDescriptor>;

const Hex32 = z.string().regex(/^0x[0-9a-f]{64}$/, "expected 0x + 64 lowercase hex digits");

/** `POST /api/v3/offchain/result`: a miner's signed result write. */
export const OffchainResultRequest = z.object({
  session_id: z.string().regex(new RegExp(`^${SESSION}$`)),
  task_id: z.string().regex(new RegExp(`^${TASK}$`)),
  /** The stored bytes, base64: the result's UTF-8 text, or its envelope when the task is encrypted. */
  content: z.string().max(8 * 1024 * 1024),
  /** SHA-256 of the decoded content. */
  content_hash: Hex32,
  /** EIP-712 `OffchainResult` signature by the miner's wallet (shared/signing.ts). */
  signature: z.string().regex(/^0x[0-9a-fA-F]+$/),
  /**
   * keccak256 of the result's plaintext, when the content is an envelope: what the router records, unopened, for a
   * task whose prompt the client sealed (others it opens and hashes itself).
   */
  result_hash: Hex32.optional(),
});
export type OffchainResultRequest = z.infer<typeof OffchainResultRequest>;

export const OffchainResultResponse = z.object({
  urn: z.string(),
  /** keccak256 of the result's plaintext: what the miner's precommit must name. */
  result_hash: z.string(),
  bytes: z.number(),
  encrypted: z.boolean(),
});
export type OffchainResultResponse = z.infer<typeof OffchainResultResponse>;

/** `POST /api/v1/auth/payload_enc_key/{session,task}`. */
export const PayloadKeyRequest = z.object({
  session_id: z.string().regex(new RegExp(`^${SESSION}$`)),
  task_id: z.union([z.string().regex(new RegExp(`^${TASK}$`)), z.number().int().min(1).max(MAX_TASK_ID).transform(String)]).optional(),
  /** Absent: the current (highest) seed version. */
  key_version: z.number().int().min(1).optional(),
});
export type PayloadKeyRequest = z.infer<typeof PayloadKeyRequest>;

export const PayloadKeyResponse = z.object({
  scope: z.enum(["session", "task"]),
  session_id: z.string(),
  task_id: z.string().nullable(),
  key_version: z.number().int(),
  /** 32 raw key bytes, hex. */
  key: z.string().regex(/^[0-9a-f]{64}$/),
  algorithm: z.literal("AES-256-GCM"),
  kdf: z.string(),
});
export type PayloadKeyResponse = z.infer<typeof PayloadKeyResponse>;

/** `POST /api/v1/sessions/:sid/reservations`: a task id for a prompt the client seals itself, and that task's key. */
export interface SealedReservation {
  object: "sealed_reservation";
  session_id: string;
  task_id: string;
  /** The token the sealed submit presents (usable once). */
  reservation: string;
  /** Unix seconds after which the reservation lapses. */
  expires_at: number;
  /** This task's key (32 bytes, hex): it seals the prompt and opens the result, and no other task's payload. */
  key: string;
  key_version: number;
  algorithm: "AES-256-GCM";
  /** What the envelope's additional data names after its header. */
  aad: string;
  /** The largest envelope (decoded bytes) the sealed route takes. */
  max_envelope_bytes: number;
}
