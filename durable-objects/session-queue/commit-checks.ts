import { type Hex, recoverTypedDataAddress } from "viem";
import type { Failure } from "../../shared/errors.ts";
import { type PayloadDescriptor, parseUrn } from "../../shared/payloads.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { precommitTypedData, resultHash } from "../../shared/signing.ts";

// The commit-reveal checks, one set for live replicas and stragglers alike. A precommit must be signed by the
// miner that sends it (EIP-712 over session, task, miner and hash); a commit must reveal exactly what was
// precommitted — inline text hashing to it, or (v2/v3) an off-chain result whose stored plaintext hash equals it.
// Each check returns why it fails, or null.

type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

/** Whether a precommit's EIP-712 signature recovers to the miner that sent it. */
export async function precommitSignedBy(sessionId: string, miner: string, msg: Precommit): Promise<boolean> {
  const signer = await recoverTypedDataAddress({
    ...precommitTypedData({ session: sessionId, task: msg.task_id, miner: miner as Hex, hash: msg.hash as Hex }),
    signature: msg.signature as Hex,
  }).catch(() => null);
  return signer?.toLowerCase() === miner.toLowerCase();
}

/**
 * The shape of an off-chain commit: its text lives in R2 only (the hash check covers the stored object, not
 * `text`), and only tasks with a payload descriptor read results from R2 — anything else would let a miner
 * commit unchecked text.
 */
export function offchainShapeFault(payload: PayloadDescriptor | undefined, msg: Commit): string | null {
  if (!msg.result_urn) return null;
  if (!payload) return "this task takes inline results only";
  return msg.text === "" ? null : "an off-chain commit must not carry text";
}

/**
 * An off-chain result write (before it reaches R2): by the task's holder, on a task with a payload descriptor
 * (an inline task's result is committed inline), and one object per replica.
 */
export function resultWriteFault(
  taskId: string,
  replica: { result_claimed?: boolean } | undefined,
  payload: PayloadDescriptor | null,
): Failure | null {
  if (!replica) return { code: "forbidden", message: `miner does not hold task ${taskId}` };
  if (!payload) return { code: "forbidden", message: `task ${taskId} takes inline results only: commit the text itself` };
  if (replica.result_claimed) return { code: "conflict", message: `this miner already wrote its off-chain result of task ${taskId}` };
  return null;
}

/** An inline commit: a private task's result never travels inline, and the text must hash to the precommit. */
export function inlineCommitFault(payload: PayloadDescriptor | undefined, precommitted: string | null, text: string): string | null {
  if (payload?.encrypted) return "a private task's result must be committed as an encrypted off-chain URN";
  return resultHash(text) === precommitted ? null : "commit does not match the precommitted hash";
}

/**
 * A commit naming a result URN: the URN must be this replica's own result for this task, and the object must
 * exist with the plaintext hash the router computed when it accepted the signed write equal to the replica's
 * precommitted hash.
 */
export async function offchainCommitFault(
  payloads: R2Bucket,
  scope: { session: string; task: string; miner: string },
  urnText: string,
  precommitted: string | null,
): Promise<string | null> {
  const urn = parseUrn(urnText);
  if (urn?.kind !== "result" || urn.session !== scope.session || urn.task !== scope.task || urn.miner !== scope.miner.toLowerCase()) {
    return "result URN does not name this replica's result";
  }
  const head = await payloads.head(urn.key);
  if (!head) return "result URN names no stored object";
  if (head.customMetadata?.result_hash !== precommitted) return "stored result does not match the precommitted hash";
  return null;
}

/** Every commit check in order (shape, then off-chain object or inline hash). */
export async function commitFault(
  payloads: R2Bucket,
  scope: { session: string; task: string; miner: string },
  payload: PayloadDescriptor | undefined,
  precommitted: string | null,
  msg: Commit,
): Promise<string | null> {
  return (
    offchainShapeFault(payload, msg) ??
    (msg.result_urn
      ? await offchainCommitFault(payloads, scope, msg.result_urn, precommitted)
      : inlineCommitFault(payload, precommitted, msg.text))
  );
}
