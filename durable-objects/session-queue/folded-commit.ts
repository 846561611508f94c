import type { SessionMinerMessage } from "../../shared/protocol.ts";

// Protocol 2 (shared/protocol.ts): a precommit may carry its task's commit. The SessionQueue handles it as the two
// frames in a row, in one event, so both are written in one transaction (one durable write less per replica).
// Nothing about commit-reveal changes: the commitment is recorded before the commit is looked at, and a commit
// whose other replicas have not all precommitted is held at the barrier (barrier.ts) exactly as a separate frame.

/** A message about one of the miner's replicas (validators' answers go elsewhere). */
export type TaskMessage = Exclude<SessionMinerMessage, { type: "embeddings" | "embed_failed" | "verification" | "verify_failed" }>;

/**
 * The frames `msg` stands for, in order. A folded commit that names another task is that task's commit, as it
 * would be in a frame of its own (and refused as one: a miner's commit counts only on its own precommitted replica).
 */
export function unfold(msg: TaskMessage): TaskMessage[] {
  if (msg.type !== "precommit" || !msg.commit) return [msg];
  const { commit, ...precommit } = msg;
  return [precommit, commit];
}
