import type { Address, Hex } from "viem";
import type { Failure } from "../../shared/errors.ts";
import { type PayloadDescriptor, parseUrn } from "../../shared/payloads.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitDigest, resultHash, type SigningDomain } from "../../shared/signing.ts";
import { inputFault, textByteCap } from "./miner-input.ts";
import { signedBy } from "./signer-keys.ts";
import type { OpenTask } from "./task.ts";

// The commit-reveal checks, one set for live replicas and stragglers alike. A precommit must be signed by the
// miner that sends it (EIP-712 over session, task, miner and its commitment); a commit must reveal exactly what
// was committed — the commitment (shared/signing.ts `commitmentHash`) recomputed from the session, the task,
// the miner and the revealed result hash: of the inline text, or (v2/v3) the plaintext hash the router recorded
// for an off-chain result. Each check returns why it fails, or null (or the revealed hash).

type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

/** Whether a precommit's EIP-712 signature, made for this deployment's domain, recovers to the miner that sent it. */
export async function precommitSignedBy(sessionId: string, miner: string, msg: Precommit, domain: SigningDomain): Promise<boolean> {
  // The digest with the deployment's domain separator cached (shared/signing.ts), checked against the miner's
  // known key, or recovered (signer-keys.ts).
  const digest = precommitDigest({ session: sessionId, task: msg.task_id, miner: miner as Hex, hash: msg.hash as Hex }, domain);
  return signedBy(miner, digest, msg.signature as Hex);
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
  replica: { result_claimed?: string } | undefined,
  payload: PayloadDescriptor | null,
  sha256: string,
): Failure | null {
  if (!replica) return { code: "forbidden", message: `miner does not hold task ${taskId}` };
  if (!payload) return { code: "forbidden", message: `task ${taskId} takes inline results only: commit the text itself` };
  // The same bytes again are a retry (a failed R2 put must not spend the miner's one write); other bytes are not.
  if (replica.result_claimed !== undefined && replica.result_claimed !== sha256)
    return { code: "conflict", message: `this miner already wrote its off-chain result of task ${taskId}` };
  return null;
}

/** A commit's outcome: the revealed result hash, or why it is refused. */
export type Reveal = { ok: true; hash: Hex } | { ok: false; fault: string };

/** Who committed what: the commitment names session, task and miner. */
export interface CommitScope {
  session: string;
  task: string;
  miner: string;
}

/** A sealed result's envelope adds a header and a tag to the text (shared/payload-crypto.ts); well under this. */
const ENVELOPE_BYTES = 64;

const refused = (fault: string): Reveal => ({ ok: false, fault });

/** Whether `hash` revealed by this scope's miner is what it committed to. */
function commits(scope: CommitScope, hash: Hex, commitment: string | null): boolean {
  const expected = commitmentHash({ session: scope.session, task: scope.task, miner: scope.miner as Address, result: hash });
  return commitment !== null && expected === commitment.toLowerCase();
}

/** An inline commit: a private task's result never travels inline, and the text must be what was committed. */
export function inlineReveal(payload: PayloadDescriptor | undefined, scope: CommitScope, commitment: string | null, text: string): Reveal {
  if (payload?.encrypted) return refused("a private task's result must be committed as an encrypted off-chain URN");
  const hash = resultHash(text);
  return commits(scope, hash, commitment) ? { ok: true, hash } : refused("commit does not match the precommitted hash");
}

/**
 * A commit naming a result URN: the URN must be this replica's own result for this task, and the object must
 * exist, within the task's text bound, with the plaintext hash the router computed when it accepted the signed
 * write being what the replica committed to.
 */
export async function offchainReveal(
  payloads: R2Bucket,
  scope: CommitScope,
  urnText: string,
  commitment: string | null,
  maxBytes: number,
): Promise<Reveal> {
  const urn = parseUrn(urnText);
  if (urn?.kind !== "result" || urn.session !== scope.session || urn.task !== scope.task || urn.miner !== scope.miner.toLowerCase()) {
    return refused("result URN does not name this replica's result");
  }
  const head = await payloads.head(urn.key);
  if (!head) return refused("result URN names no stored object");
  if (head.size > maxBytes + ENVELOPE_BYTES) return refused(`stored result exceeds ${maxBytes} bytes`);
  const hash = head.customMetadata?.result_hash as Hex | undefined;
  if (!hash || !commits(scope, hash, commitment)) return refused("stored result does not match the precommitted hash");
  return { ok: true, hash };
}

/**
 * Every commit check in order, for live replicas and stragglers alike: the shape, the text and usage bounds
 * (miner-input.ts), then the off-chain object or the inline text against the commitment.
 */
export async function revealCommit(
  payloads: R2Bucket,
  scope: CommitScope,
  task: Pick<OpenTask, "assign" | "promptBytes">,
  commitment: string | null,
  msg: Commit,
): Promise<Reveal> {
  const fault = offchainShapeFault(task.assign.payload, msg) ?? inputFault(task, msg.text, msg.usage);
  if (fault) return refused(fault);
  if (!msg.result_urn) return inlineReveal(task.assign.payload, scope, commitment, msg.text);
  return offchainReveal(payloads, scope, msg.result_urn, commitment, textByteCap(task.assign.params));
}
