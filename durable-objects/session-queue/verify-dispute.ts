import type { ConsensusView, VerificationEvidence } from "../../shared/views.ts";
import { type OpenTask, type Replica, replicasOf } from "./task.ts";

// A falsely failed honest output (a lying validator, or float noise beyond the tolerance on one device) would fail
// again on the next miner: it samples the same tokens from the same seed. So before the next replica's output goes
// to validators (verify-round.ts intercept), it is compared with each failed replica's: identical token ids and
// text from a miner that never saw them make a dispute. Exact agreement alone does not settle it — two miners
// running the same cheaper model (one popular quantization) agree exactly too — so the output goes to validators
// that never saw the failed one (never its accusers). If they pass it, the accusation is not confirmed: the task
// answers with that output, both replicas agree and are not punished, and the dispute (the evidence and the
// validators that failed it) is in the verdict, the rows' reasons and so the ledger's. If they fail it, both are
// outliers; if no such validator is left, the accusation stands for the reproduction too.
//
// Copying: the ids are never shown to a miner that could become the next replica. Task views stay sealed while
// the task is open (task-store.ts view), so only the validators that re-scored the failed output saw them, and a
// replica among those (the failed output's `seen_by`) never makes a dispute: its output is verified as any other.
// The next replica is picked among the miners that did not see it first (miner-load.ts pick), so a dispute can
// happen wherever such a miner is free. What is left is collusion outside the network between the failed replica
// and the next one: exact consensus has the same limit.

const sameIds = (a: readonly number[] | undefined, b: readonly number[] | undefined) =>
  !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Failed replicas of the task whose output `r` reproduced exactly without having seen it. Only failures of sampled
 * positions are disputable: one of the router's own checks (-1: the text, the usage) stands whatever the tokens.
 */
export function disputedBy(task: OpenTask, r: Replica): Replica[] {
  if (r.verify_failed || !r.token_ids) return [];
  const miner = r.miner.toLowerCase();
  return replicasOf(task).filter(
    (x) =>
      x !== r &&
      x.state === "committed" &&
      !!x.verify_failed &&
      !x.verify_failed.positions.includes(-1) &&
      !x.verify_failed.seen_by.some((v) => v.toLowerCase() === miner) &&
      x.hash === r.hash &&
      x.usage?.prompt_tokens === r.usage?.prompt_tokens &&
      sameIds(x.token_ids, r.token_ids),
  );
}

/**
 * The verdict of a settled dispute: `r`'s output as fresh validators passed it (`passed`), agreed by it and the
 * replicas it reproduced, whose failures are lifted (in memory: the caller writes the rows); the evidence moves to
 * `verification.disputed`.
 */
export function disputeVerdict(task: OpenTask, r: Replica, accused: Replica[], passed: ConsensusView): ConsensusView {
  const disputed: NonNullable<VerificationEvidence["disputed"]> = {};
  for (const a of accused) {
    const { positions, count, reason, by } = a.verify_failed!;
    disputed[a.miner] = { positions, count, reason, by, reproduced_by: r.miner };
    a.verify_failed = undefined;
    a.reason = `verification disputed: ${by.join(", ")} failed it (${reason}), but ${r.miner}, never shown it, reproduced its tokens exactly; not confirmed`;
  }
  const names = accused.map((a) => a.miner);
  r.reason = `reproduced exactly the output of ${names.join(", ")}, which validators had failed: the accusation is not confirmed`;
  const failed = failedEvidence(task);
  const verification: VerificationEvidence = { ...passed.verification!, failed, disputed };
  return {
    ...passed,
    agreed: [...new Set([...passed.agreed, r.miner, ...names])],
    outliers: passed.outliers.filter((m) => !names.includes(m)),
    verification,
    note: `validators failed ${names.join(", ")}; ${r.miner}, never shown that output, reproduced it token for token with the same seed, and validators that never saw it passed it: the accusation is not confirmed`,
  };
}

/** The replicas of the task that failed verification, as a verdict lists them. */
export function failedEvidence(task: OpenTask): VerificationEvidence["failed"] {
  const failed: VerificationEvidence["failed"] = {};
  for (const x of replicasOf(task)) {
    const f = x.verify_failed;
    if (f) failed[x.miner] = { positions: f.positions, count: f.count, reason: f.reason };
  }
  return failed;
}

/** Miners that saw a failed output of the task as validators: the last choice for its next replica. */
export function sawFailedOutput(task: OpenTask): Set<string> {
  return new Set(replicasOf(task).flatMap((x) => x.verify_failed?.seen_by ?? []));
}
