import type { MinerRow } from "./pool-miners.ts";
import { isBenched, type Policy, reputation, stakeAtRisk } from "./reputation.ts";

// The pool's bench rule as it reads the registry: who may be given sessions, and the scores assignment ranks by.

export function poolPolicy(env: Pick<Env, "MIN_STAKE" | "REPUTATION_FLOOR" | "REPUTATION_MIN_TASKS">): Policy {
  return {
    minStake: Number(env.MIN_STAKE) || 0,
    floor: Number(env.REPUTATION_FLOOR ?? 0.2),
    minTasks: Number(env.REPUTATION_MIN_TASKS) || 10,
  };
}

/** Reputation scores of the miners with a record (the rest rank at the default). */
export function reputationScores(sql: SqlStorage): Map<string, number> {
  return new Map(
    sql
      .exec<MinerRow>(`SELECT * FROM miners WHERE tasks > 0`)
      .toArray()
      .map((r) => [r.address, reputation(r).score]),
  );
}

/** Addresses of miners that may not be given sessions (only rows that could be benched are read). */
export function benchedMiners(sql: SqlStorage, policy: Policy): Set<string> {
  const out = new Set<string>();
  for (const r of sql.exec<MinerRow>(`SELECT * FROM miners WHERE tasks >= ? OR stake - unsettled < ?`, policy.minTasks, policy.minStake)) {
    if (isBenched(stakeAtRisk(r), reputation(r), policy)) out.add(r.address);
  }
  return out;
}
