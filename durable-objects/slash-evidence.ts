import type { JsonPrimitive } from "../shared/errors.ts";
import type { SessionMinerMessage } from "../shared/protocol.ts";
import type { SigningDomain } from "../shared/signing.ts";
import { type CommitScope, precommitSignedBy, type Reveal, revealCommit } from "./session-queue/commit-checks.ts";

// What a rejected replica's slash carries as proof: the miner's own signed messages that conflict. The SessionQueue
// runs its commit-reveal checks (session-queue/commit-checks.ts) through checkPrecommit/checkCommit below, which
// keep the proof on the replica it rejects (session-queue.ts, stragglers.ts); it reaches the pool with the
// replica's outcome, then R2 (`evidence/<keccak of the canonical JSON>.json`) and the chain's Slashed event by hash.

type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

export type SlashProof = { [key: string]: JsonPrimitive };

/** A precommit whose signature does not recover to the miner that sent it. */
export function precommitProof(msg: Precommit): SlashProof {
  return { fault: "precommit_signature", precommit_hash: msg.hash, precommit_signature: msg.signature };
}

/** A commit that does not reveal what the miner's signed precommit committed to (or breaks the task's bounds). */
export function commitProof(precommit: { hash: string | null; signature?: string | null }, msg: Commit): SlashProof {
  return {
    fault: "commit",
    precommit_hash: precommit.hash,
    precommit_signature: precommit.signature ?? null,
    commit_text: msg.text,
    commit_result_urn: msg.result_urn ?? null,
    commit_finish_reason: msg.finish_reason,
    commit_usage: JSON.stringify(msg.usage),
  };
}

/** What the checks below need of a replica (session-queue/task.ts Replica). */
interface ProvableReplica {
  miner: string;
  commitment: string | null;
  precommit_signature?: string;
  evidence?: SlashProof;
}

/** precommitSignedBy, keeping the signature (or, when it fails, the proof) on the replica. */
export async function checkPrecommit(sessionId: string, r: ProvableReplica, msg: Precommit, domain: SigningDomain): Promise<boolean> {
  const signed = await precommitSignedBy(sessionId, r.miner, msg, domain);
  if (signed) r.precommit_signature = msg.signature;
  else r.evidence = precommitProof(msg);
  return signed;
}

/** revealCommit, keeping the proof on the replica when the commit is refused. */
export async function checkCommit(
  payloads: R2Bucket,
  scope: CommitScope,
  task: Parameters<typeof revealCommit>[2],
  r: ProvableReplica,
  msg: Commit,
): Promise<Reveal> {
  const reveal = await revealCommit(payloads, scope, task, r.commitment, msg);
  if (!reveal.ok) r.evidence = commitProof({ hash: r.commitment, signature: r.precommit_signature }, msg);
  return reveal;
}
