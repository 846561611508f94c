// Reputation, stake and the accounting ledger: the NodePool's storage for them and the rules that move them.
// The SessionQueue reports one outcome per replica when a task ends; the NodePool applies them here.

import type { JsonPrimitive, JsonValue } from "../shared/errors.ts";

/** How one replica of a finished task ended, as far as its miner's record is concerned. */
/** `cancelled`: its commit was in when the task's owner cancelled it — paid its share, no reputation either way. */
export const OUTCOMES = ["agreed", "outlier", "rejected", "timed_out", "disconnected", "released", "cancelled"] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface ReplicaOutcome {
  miner: string;
  session_id: string;
  task_id: string;
  /** Who submitted the task: ledger readers see session and task ids of their own tasks only. */
  owner?: string | null;
  outcome: Outcome;
  reason: string | null;
  /** Assignment to commit, ms (committed replicas only). */
  latency_ms: number | null;
  /** Tokens earned: the task's usage split among the replicas in consensus (0 for everything else). */
  reward: number;
  at: number;
  block: number;
  /** A slashable fault's proof (rejected replicas): the signed messages that conflict (durable-objects/slash-evidence.ts). */
  evidence?: { [key: string]: JsonPrimitive };
}

export type LedgerKind = "reward" | "slash" | "penalty";

export interface LedgerEntry {
  id: number;
  miner: string;
  session_id: string;
  task_id: string;
  /** Who submitted the task (null before owners were recorded). */
  owner: string | null;
  kind: LedgerKind;
  /** Tokens: earned (reward) or taken from stake (slash); penalties cost reputation only, so 0. */
  amount: number;
  reason: string;
  at: number;
  block: number;
  /** Slashes only (null otherwise): durable-objects/slash-submitter.ts `SlashStatus`. */
  status: SlashStatus | null;
  /** The slash batch transaction that carries (or carried) this slash on chain. */
  tx_hash: string | null;
  /** keccak256 of the evidence's canonical JSON: its R2 key `evidence/<hash>.json`, and what the chain records. */
  evidence_hash: string | null;
}

/**
 * A slash's way to the chain. `local`: no chain is configured, the ledger is all there is; `pending`: written,
 * not yet sent; `submitted`: its signed batch transaction is recorded (hash first, then sent); `confirmed`: mined;
 * `failed`: the chain refused it too many times (it still counts against the miner here).
 */
export const SLASH_STATUSES = ["local", "pending", "submitted", "confirmed", "failed"] as const;
export type SlashStatus = (typeof SLASH_STATUSES)[number];

export interface ReputationView {
  score: number;
  tasks: number;
  /** agreed / (agreed + outliers); null before any consensus. */
  agreement_rate: number | null;
  /** replicas that delivered a commit matching a valid precommit in time / those that had to; null before any. */
  precommit_success_rate: number | null;
  timeouts: number;
  outliers: number;
  slashes: number;
  latency_ms: number | null;
}

/** The counters a miner row carries (see migration 2). */
export interface RepCounters {
  tasks: number;
  agreed: number;
  outliers: number;
  slashes: number;
  timeouts: number;
  latency_ms: number | null;
}

/** Share of the remaining stake a provable fault costs. */
export const SLASH_FRACTION = 0.1;

/**
 * score = (agreed + 1) / (agreed + outliers + slashes + timeouts + 1)
 * — the share of the results a miner owed that it delivered in time, validly signed and in consensus,
 * Laplace-smoothed so a newcomer starts at 1 and one event cannot sink a long record. It equals
 * agreement_rate × precommit_success_rate with both smoothed by one success. Disconnects and hand-backs count
 * as tasks but neither way (an honest restart is not a fault).
 */
export function reputation(c: RepCounters): ReputationView {
  const delivered = c.agreed + c.outliers;
  const owed = delivered + c.slashes + c.timeouts;
  return {
    score: Math.round(((c.agreed + 1) / (owed + 1)) * 1e4) / 1e4,
    tasks: c.tasks,
    agreement_rate: delivered ? c.agreed / delivered : null,
    precommit_success_rate: owed ? delivered / owed : null,
    timeouts: c.timeouts,
    outliers: c.outliers,
    slashes: c.slashes,
    latency_ms: c.latency_ms === null ? null : Math.round(c.latency_ms),
  };
}

/**
 * The stake at risk: the figure last read (or declared) less the slashes it does not reflect yet — every slash
 * of a declared stake, and on chain those not confirmed before the block the figure was read at.
 */
export function stakeAtRisk(r: { stake: number; unsettled: number }): number {
  return Math.max(0, r.stake - r.unsettled);
}

/** Recomputes a miner's `unsettled` from its ledger (after a stake read or a confirmation moved the line). */
export function settleStake(sql: SqlStorage, miner: string): void {
  sql.exec(
    `UPDATE miners SET unsettled = (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE ledger.miner = miners.address AND kind = 'slash'
       AND NOT (status = 'confirmed' AND chain_block IS NOT NULL AND chain_block <= miners.stake_block)) WHERE address = ?`,
    miner,
  );
}

export interface Policy {
  minStake: number;
  floor: number;
  minTasks: number;
}

/** Benched miners get no sessions: too little stake left, or a poor score over enough tasks to mean it. */
export function isBenched(stake: number, rep: ReputationView, p: Policy): boolean {
  return stake < p.minStake || (rep.tasks >= p.minTasks && rep.score < p.floor);
}

/** NodePool storage, append-only: stored pools upgrade in place (version 1 is the pre-versioning schema). */
export const POOL_MIGRATIONS: string[][] = [
  [
    `CREATE TABLE IF NOT EXISTS miners (
      address TEXT PRIMARY KEY, name TEXT, version TEXT, models TEXT NOT NULL, device TEXT NOT NULL,
      capacity INTEGER NOT NULL, registered_at INTEGER NOT NULL, last_seen INTEGER, inflight INTEGER NOT NULL DEFAULT 0,
      cpu_usage REAL, memory_mb REAL, tokens_per_s REAL)`,
    `CREATE TABLE IF NOT EXISTS challenges (nonce TEXT PRIMARY KEY, address TEXT NOT NULL, expires_at INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, config TEXT NOT NULL, active INTEGER NOT NULL,
      created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS assignments (session_id TEXT NOT NULL, miner TEXT NOT NULL, PRIMARY KEY (session_id, miner))`,
    `CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
  ],
  [
    // stake: declared at registration; slashed: taken so far. The stake at risk is stake − slashed.
    `ALTER TABLE miners ADD COLUMN stake INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN slashed INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN rewards INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN tasks INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN agreed INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN outliers INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN slashes INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN timeouts INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN latency_ms REAL`,
    `CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, miner TEXT NOT NULL, session_id TEXT NOT NULL,
      task_id TEXT NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL,
      block INTEGER NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS ledger_miner ON ledger (miner, id)`,
  ],
  // Who submitted each entry's task, so a ledger reader sees the ids of its own tasks only.
  [`ALTER TABLE ledger ADD COLUMN owner TEXT`],
  // Token revocation and declared contexts (durable-objects/miner-credentials.ts).
  [`ALTER TABLE miners ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0`, `ALTER TABLE miners ADD COLUMN contexts TEXT`],
  // The catalog's owner quota and O(1) miner counts (pool-catalog.ts); the sessions whose channels a miner opened,
  // so a revoke reaches every one (miner-credentials.ts).
  [
    `ALTER TABLE sessions ADD COLUMN owner TEXT`,
    `ALTER TABLE sessions ADD COLUMN miners INTEGER NOT NULL DEFAULT 0`,
    `UPDATE sessions SET owner = json_extract(config, '$.owner'),
       miners = (SELECT COUNT(*) FROM assignments a WHERE a.session_id = sessions.id)`,
    `CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner)`,
    `CREATE TABLE IF NOT EXISTS session_claims (id TEXT PRIMARY KEY, owner TEXT NOT NULL, at INTEGER NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS session_claims_owner ON session_claims (owner)`,
    `CREATE INDEX IF NOT EXISTS assignments_miner ON assignments (miner)`,
    `CREATE TABLE IF NOT EXISTS miner_channels (miner TEXT NOT NULL, session_id TEXT NOT NULL, PRIMARY KEY (miner, session_id))`,
  ],
  // Stake from the chain (durable-objects/chain-stake.ts): where the figure came from, when and at which block it
  // was read, and the slashes it does not reflect yet (`unsettled`); slashes on their way to the chain
  // (durable-objects/slash-submitter.ts): status, batch transaction (signed before it is sent), evidence.
  [
    `ALTER TABLE miners ADD COLUMN stake_source TEXT NOT NULL DEFAULT 'declared'`,
    `ALTER TABLE miners ADD COLUMN stake_block INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN stake_checked_at INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE miners ADD COLUMN unsettled INTEGER NOT NULL DEFAULT 0`,
    `UPDATE miners SET unsettled = slashed`,
    `ALTER TABLE ledger ADD COLUMN status TEXT`,
    `ALTER TABLE ledger ADD COLUMN tx_hash TEXT`,
    `ALTER TABLE ledger ADD COLUMN evidence_hash TEXT`,
    `ALTER TABLE ledger ADD COLUMN evidence TEXT`,
    `ALTER TABLE ledger ADD COLUMN chain_block INTEGER`,
    `ALTER TABLE ledger ADD COLUMN tx_raw TEXT`,
    `ALTER TABLE ledger ADD COLUMN tx_nonce INTEGER`,
    `ALTER TABLE ledger ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE ledger ADD COLUMN next_try_at INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE ledger ADD COLUMN last_error TEXT`,
    `UPDATE ledger SET status = 'local' WHERE kind = 'slash'`,
    `CREATE INDEX IF NOT EXISTS ledger_slash_queue ON ledger (status, next_try_at) WHERE status IN ('pending', 'submitted')`,
    // The development faucet's grants of the last hour (durable-objects/pool-stake.ts grantFaucet).
    `CREATE TABLE IF NOT EXISTS faucet_grants (address TEXT NOT NULL, at INTEGER NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS faucet_grants_address ON faucet_grants (address, at)`,
  ],
];

/** What a slash's evidence file says: who, where, why, and the signed messages that prove it. */
export function slashEvidence(o: ReplicaOutcome, reason: string, amount: number): { [key: string]: JsonValue } {
  return {
    kind: "slash",
    session_id: o.session_id,
    task_id: o.task_id,
    miner: o.miner,
    reason,
    amount,
    at: o.at,
    block: o.block,
    proof: o.evidence ?? null,
  };
}

/**
 * Applies a batch of outcomes: counters, stake, ledger. Returns the miners it touched. Outcomes for
 * unknown miners are dropped (a miner row exists for every address a session ever served).
 */
export function applyOutcomes(sql: SqlStorage, outcomes: ReplicaOutcome[], slashFraction = SLASH_FRACTION): Set<string> {
  const touched = new Set<string>();
  const ledger = (o: ReplicaOutcome, kind: LedgerKind, amount: number, reason: string, slash?: { status: SlashStatus; evidence: string }) =>
    sql.exec(
      `INSERT INTO ledger (miner, session_id, task_id, owner, kind, amount, reason, at, block, status, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      o.miner,
      o.session_id,
      o.task_id,
      o.owner ?? null,
      kind,
      amount,
      reason,
      o.at,
      o.block,
      slash?.status ?? null,
      slash?.evidence ?? null,
    );
  for (const o of outcomes) {
    const row = sql
      .exec<{ stake: number; unsettled: number; stake_source: string }>(
        `SELECT stake, unsettled, stake_source FROM miners WHERE address = ?`,
        o.miner,
      )
      .toArray()[0];
    if (!row) continue;
    touched.add(o.miner);
    sql.exec(`UPDATE miners SET tasks = tasks + 1 WHERE address = ?`, o.miner);
    if (o.latency_ms !== null && (o.outcome === "agreed" || o.outcome === "outlier")) {
      // Moving average: recent behaviour matters more than the distant past.
      sql.exec(
        `UPDATE miners SET latency_ms = COALESCE(0.8 * latency_ms + 0.2 * ?, ?) WHERE address = ?`,
        o.latency_ms,
        o.latency_ms,
        o.miner,
      );
    }
    switch (o.outcome) {
      case "agreed":
        sql.exec(`UPDATE miners SET agreed = agreed + 1, rewards = rewards + ? WHERE address = ?`, o.reward, o.miner);
        // A reason on an agreed replica says how it got there (e.g. a disputed verification: verify-dispute.ts).
        if (o.reward > 0) ledger(o, "reward", o.reward, o.reason ? `in consensus: ${o.reason}` : "in consensus");
        break;
      case "outlier":
        sql.exec(`UPDATE miners SET outliers = outliers + 1 WHERE address = ?`, o.miner);
        ledger(o, "penalty", 0, o.reason ?? "outlier: result disagrees with consensus");
        break;
      case "rejected": {
        const amount = Math.ceil(stakeAtRisk(row) * slashFraction);
        sql.exec(
          `UPDATE miners SET slashes = slashes + 1, slashed = slashed + ?, unsettled = unsettled + ? WHERE address = ?`,
          amount,
          amount,
          o.miner,
        );
        const reason = o.reason ?? "provable fault";
        // A stake read from the chain is slashed there too (batched by the NodePool's alarm); nothing to send for 0.
        const status: SlashStatus = row.stake_source === "chain" && amount > 0 ? "pending" : "local";
        ledger(o, "slash", amount, reason, { status, evidence: JSON.stringify(slashEvidence(o, reason, amount)) });
        break;
      }
      case "timed_out":
        sql.exec(`UPDATE miners SET timeouts = timeouts + 1 WHERE address = ?`, o.miner);
        ledger(o, "penalty", 0, o.reason ?? "timed out");
        break;
      case "cancelled":
        sql.exec(`UPDATE miners SET rewards = rewards + ? WHERE address = ?`, o.reward, o.miner);
        if (o.reward > 0) ledger(o, "reward", o.reward, o.reason ?? "work done before the task's owner cancelled it");
        break;
      default:
        break; // disconnects and hand-backs: counted as tasks, neither rewarded nor penalised
    }
  }
  return touched;
}
