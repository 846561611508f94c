import { parseUrn } from "../../shared/payloads.ts";

/**
 * Run by the SessionQueue when a commit names a result URN: the URN must be this replica's own result for this
 * task, and the object must exist with the plaintext hash the router computed when it accepted the signed
 * write equal to the replica's precommitted hash. Returns why not, or null.
 */
export async function checkOffchainCommit(
  payloads: R2Bucket,
  sessionId: string,
  taskId: string,
  miner: string,
  urnText: string,
  precommitted: string,
): Promise<string | null> {
  const urn = parseUrn(urnText);
  if (!urn || urn.kind !== "result" || urn.session !== sessionId || urn.task !== taskId || urn.miner !== miner.toLowerCase()) {
    return "result URN does not name this replica's result";
  }
  const head = await payloads.head(urn.key);
  if (!head) return "result URN names no stored object";
  if (head.customMetadata?.result_hash !== precommitted) return "stored result does not match the precommitted hash";
  return null;
}
