// Aggregation of replica answers (v3 delegate/validate, factcheck): pure functions, no Worker APIs.
//
// Every replica either failed or answered with a `key` (what must match for two replicas to agree: the
// output hash for delegate, the verdict label for validate/factcheck) and optionally a numeric `score`.
//
//   majority         groups by key, one vote per replica; a quorum is a strict majority of the replicas
//                    requested (failed replicas count against it).
//   weighted         groups by key, each replica weighs its miners' reputation score or stake; a quorum is
//                    more than half the weight of the replicas that answered.
//   median_of_means  numeric: the replicas' scores are dealt round-robin into ⌈√n⌉ blocks, the result is the
//                    median of the block means; replicas within `tolerance` of it agree, and the winning key
//                    is the most common key among them. A quorum is a strict majority of those requested.
//
// Disagreement policies, applied once the winner is known:
//   best_effort (default)  answer the winner even without a quorum (consensus.status says which).
//   return_all             answer the winner only with a quorum; without one, status "no_consensus", no final
//                          answer, and every candidate answer with its supporters.
//   fail_hard              any successful replica outside the winning group, or no quorum → failure
//                          `no_consensus` (failed replicas alone do not trigger it when a quorum agrees).
// No successful replica at all is always a failure (`all_replicas_failed`, `timeout` when every replica
// timed out, or `deadline_too_short` when every session refused the client's deadline as below its floor).
//
// Support counts distinct miners, not replicas: replicas a single miner produced (one miner serving the whole
// pool, or two of its sessions) are one voice, so they never make a quorum or "unanimous" on their own. A
// replica whose votes name no miners counts as one voice of its own.

export const STRATEGIES = ["majority", "weighted", "median_of_means"] as const;
export type Strategy = (typeof STRATEGIES)[number];
export const DISAGREEMENT_POLICIES = ["return_all", "fail_hard", "best_effort"] as const;
export type DisagreementPolicy = (typeof DISAGREEMENT_POLICIES)[number];
export const WEIGHT_BY = ["reputation", "stake"] as const;
export type WeightBy = (typeof WEIGHT_BY)[number];

export interface Vote {
  index: number;
  /** null: the replica failed (no answer). */
  key: string | null;
  score?: number | null;
  /** Used by `weighted` only. */
  weight?: number;
  /** Failure code of a failed replica (to tell a timeout apart). */
  error_code?: string | null;
  /** Miners whose result the replica is (its session's consensus); support counts each miner once. */
  miners?: string[];
}

export interface Candidate {
  key: string;
  replicas: number[];
  /** Votes (majority, median_of_means) or summed weight (weighted). */
  support: number;
  mean_score: number | null;
}

export interface Aggregate {
  strategy: Strategy;
  disagreement_policy: DisagreementPolicy;
  /** ok: `key` is the answer; no_consensus: return_all without a quorum; failed: see `error`. */
  outcome: "ok" | "no_consensus" | "failed";
  /** unanimous: every requested replica answered alike; majority: a quorum agreed; no_quorum: a plurality only; none: nothing answered. */
  status: "unanimous" | "majority" | "no_quorum" | "none";
  key: string | null;
  /** The aggregated score (mean of agreeing replicas' scores; median of means for median_of_means). */
  score: number | null;
  agreed: number[];
  disagreed: number[];
  failed: number[];
  /** Share of support behind the winner: votes / replicas requested, or weight / weight answered. */
  agreement: number;
  quorum: number;
  candidates: Candidate[];
  error: { code: "all_replicas_failed" | "timeout" | "deadline_too_short" | "no_consensus"; message: string } | null;
}

export interface AggregateOptions {
  strategy: Strategy;
  policy: DisagreementPolicy;
  /** Replicas asked for (failed ones included). */
  requested: number;
  /** median_of_means: how far (absolute, on the score's scale) a replica may sit from the result and agree. */
  tolerance?: number;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median of means over ⌈√n⌉ blocks, filled round-robin in the given order (deterministic). */
export function medianOfMeans(xs: number[]): number {
  if (xs.length === 0) throw new Error("median of means of nothing");
  const blocks: number[][] = Array.from({ length: Math.ceil(Math.sqrt(xs.length)) }, () => []);
  for (const [i, x] of xs.entries()) blocks[i % blocks.length].push(x);
  return median(blocks.map((b) => mean(b)!));
}

/**
 * Support of some votes counted per distinct miner: each vote adds its weight times the share of its miners not
 * counted yet (a vote naming no miners is a voice of its own).
 */
function distinctSupport(votes: Vote[], weigh: (v: Vote) => number): number {
  const seen = new Set<string>();
  let support = 0;
  for (const v of votes) {
    const miners = v.miners?.length ? v.miners.map((m) => m.toLowerCase()) : [`replica:${v.index}`];
    const fresh = miners.filter((m) => !seen.has(m));
    for (const m of fresh) seen.add(m);
    support += (weigh(v) * fresh.length) / miners.length;
  }
  return support;
}

function groups(votes: Vote[], weigh: (v: Vote) => number): Candidate[] {
  const byKey = new Map<string, Vote[]>();
  for (const v of votes) byKey.set(v.key!, [...(byKey.get(v.key!) ?? []), v]);
  return [...byKey.entries()].map(([key, vs]) => ({
    key,
    replicas: vs.map((v) => v.index),
    support: distinctSupport(vs, weigh),
    mean_score: mean(vs.map((v) => v.score).filter((s): s is number => typeof s === "number")),
  }));
}

/** Distinct voices (miners) behind these replicas. */
const voices = (answered: Vote[], replicas: number[]) =>
  distinctSupport(
    answered.filter((v) => replicas.includes(v.index)),
    () => 1,
  );

/** Most support first; ties go to the group whose first replica came first (deterministic). */
function rank(cands: Candidate[]): Candidate[] {
  return [...cands].sort(
    (a, b) => b.support - a.support || b.replicas.length - a.replicas.length || Math.min(...a.replicas) - Math.min(...b.replicas),
  );
}

interface Tally {
  winner: Candidate;
  candidates: Candidate[];
  agreed: number[];
  score: number | null;
  agreement: number;
  hasQuorum: boolean;
}

/** One vote per replica; the largest group of equal keys wins. */
function byMajority(answered: Vote[], requested: number, quorum: number): Tally {
  const candidates = rank(groups(answered, () => 1));
  const winner = candidates[0];
  const agreed = winner.replicas;
  return {
    winner,
    candidates,
    agreed,
    score: winner.mean_score,
    agreement: winner.support / requested,
    hasQuorum: winner.support >= quorum,
  };
}

/** Votes weighted (reputation or stake); a majority of the weight wins. */
function byWeight(answered: Vote[]): Tally {
  const weigh = (v: Vote) => Math.max(0, v.weight ?? 0);
  const candidates = rank(groups(answered, weigh));
  const winner = candidates[0];
  const agreed = winner.replicas;
  const total = distinctSupport(answered, weigh);
  // All weights zero (unknown miners): fall back to counting distinct miners.
  const agreement =
    total > 0
      ? winner.support / total
      : voices(answered, agreed) /
        voices(
          answered,
          answered.map((v) => v.index),
        );
  return { winner, candidates, agreed, score: winner.mean_score, agreement, hasQuorum: agreement > 0.5 };
}

/** The median of block means of the numeric scores; replicas within `tol` of it agree. */
function byMedianOfMeans(answered: Vote[], requested: number, quorum: number, tol: number): Tally {
  const scored = answered.filter((v) => typeof v.score === "number" && Number.isFinite(v.score));
  const candidates = rank(groups(answered, () => 1));
  let winner = candidates[0];
  let score: number | null = null;
  if (scored.length > 0) {
    const value = medianOfMeans(scored.map((v) => v.score!));
    const near = scored.filter((v) => Math.abs(v.score! - value) <= tol + 1e-9);
    // The most common key among the replicas near the result; ties go to the one closest to it.
    const nearGroups = groups(near, () => 1);
    const closest = (c: Candidate) => Math.min(...c.replicas.map((i) => Math.abs(scored.find((v) => v.index === i)!.score! - value)));
    nearGroups.sort((a, b) => b.support - a.support || closest(a) - closest(b) || Math.min(...a.replicas) - Math.min(...b.replicas));
    winner = nearGroups[0] ?? candidates[0];
    score = value;
  }
  // With nothing numeric to aggregate, the answers still disagree or agree by key.
  const agreed = winner.replicas;
  const support = voices(answered, agreed);
  return { winner, candidates, agreed, score, agreement: support / requested, hasQuorum: support >= quorum };
}

export function aggregate(votes: Vote[], opts: AggregateOptions): Aggregate {
  const { strategy, policy, requested } = opts;
  const answered = votes.filter((v) => v.key != null);
  const failed = votes.filter((v) => v.key == null).map((v) => v.index);
  const base = { strategy, disagreement_policy: policy, failed, quorum: Math.floor(requested / 2) + 1 };
  if (answered.length === 0) {
    const allTimeouts = votes.length > 0 && votes.every((v) => v.error_code === "timeout");
    // The client asked for a deadline no miner could meet: its own error, not the network's (each replica's names the floor).
    const tooShort = votes.length > 0 && votes.every((v) => v.error_code === "deadline_too_short");
    return {
      ...base,
      outcome: "failed",
      status: "none",
      key: null,
      score: null,
      agreed: [],
      disagreed: [],
      agreement: 0,
      candidates: [],
      error: allTimeouts
        ? { code: "timeout", message: `all ${votes.length} replicas timed out` }
        : tooShort
          ? { code: "deadline_too_short", message: `the deadline is below the floor of every replica's task (see each replica's error)` }
          : { code: "all_replicas_failed", message: `all ${votes.length} replicas failed` },
    };
  }

  const { winner, candidates, agreed, score, agreement, hasQuorum } =
    strategy === "median_of_means"
      ? byMedianOfMeans(answered, requested, base.quorum, opts.tolerance ?? 0.2)
      : strategy === "weighted"
        ? byWeight(answered)
        : byMajority(answered, requested, base.quorum);

  const agreedSet = new Set(agreed);
  const disagreed = answered.map((v) => v.index).filter((i) => !agreedSet.has(i));
  // Unanimous: every requested replica answered alike, each from a miner of its own.
  const everyone = agreed.length === requested && disagreed.length === 0 && failed.length === 0 && voices(answered, agreed) === requested;
  const status = everyone ? "unanimous" : hasQuorum ? "majority" : "no_quorum";
  const result: Aggregate = {
    ...base,
    outcome: "ok",
    status,
    key: winner.key,
    score,
    agreed,
    disagreed,
    agreement,
    candidates,
    error: null,
  };

  if (policy === "fail_hard" && (!hasQuorum || disagreed.length > 0)) {
    return {
      ...result,
      outcome: "failed",
      key: null,
      error: {
        code: "no_consensus",
        message: hasQuorum
          ? `replicas disagreed (${disagreed.length} of ${answered.length} answered differently) and disagreement_policy is fail_hard`
          : `no quorum (${agreed.length} of ${requested} agreed, ${base.quorum} needed) and disagreement_policy is fail_hard`,
      },
    };
  }
  if (policy === "return_all" && !hasQuorum) return { ...result, outcome: "no_consensus", key: null };
  return result;
}
