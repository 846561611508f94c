import type { Hex } from "viem";
import type { ChainConfig } from "../shared/chain.ts";
import type { Failure } from "../shared/errors.ts";
import {
  configFailure,
  FAUCET_ETH,
  FAUCET_TOKENS,
  faucetCalls,
  publicClient,
  readStake,
  routerChain,
  STAKE_TTL_MS,
  signRouterTx,
} from "./chain-stake.ts";
import type { MinerRow } from "./pool-miners.ts";
import { stakeAtRisk } from "./reputation.ts";
import { recordStake } from "./slash-submitter.ts";

// The NodePool's stake rules: which figure a registration counts, the alarm's refresh of connected miners' stake,
// and the development faucet's grants (all transactions from the router key go through the pool, one at a time).

export interface StakeFigure {
  ok: true;
  stake: number;
  /** Slashes `stake` does not reflect (reputation.ts `stakeAtRisk`). */
  unsettled: number;
  source: "chain" | "declared";
  block: number;
  checkedAt: number;
}

const errorText = (err: unknown) => String((err as Error).message ?? err).split("\n")[0];

/** Slashes a figure does not reflect: all of a declared stake's; on chain, those not confirmed by its block. */
function unsettledFor(sql: SqlStorage, address: string, source: "chain" | "declared", block: number): number {
  return sql
    .exec<{ n: number }>(
      `SELECT COALESCE(SUM(amount), 0) AS n FROM ledger WHERE miner = ? AND kind = 'slash'
         AND NOT (? = 'chain' AND status = 'confirmed' AND chain_block IS NOT NULL AND chain_block <= ?)`,
      address,
      source,
      block,
    )
    .one().n;
}

/**
 * The stake a registration counts. With a chain: the staking contract's figure (a read younger than STAKE_TTL_MS
 * that passes the gate is reused; a refusal always comes from a fresh read), never the declared number; an
 * unreachable chain refuses (503 chain_unavailable) rather than trusting the miner. Without one: the declared
 * stake, in development only — elsewhere a declared stake is refused, for nothing can back it.
 */
export async function registrationStake(
  sql: SqlStorage,
  env: Env,
  m: { address: string; declared: number; known: MinerRow | undefined; minStake: number },
): Promise<StakeFigure | { ok: false; error: Failure }> {
  let cfg: ChainConfig | null;
  try {
    cfg = routerChain(env);
  } catch (err) {
    return { ok: false, error: configFailure(err) };
  }
  const now = Date.now();
  if (!cfg) {
    if (env.ROUTER_ENV !== "development" && m.declared > 0) {
      const message =
        "a declared stake is accepted only when ROUTER_ENV=development: configure the chain (CHAIN_RPC_URL, TOKEN_ADDRESS, " +
        "STAKING_ADDRESS) so stakes are read from the staking contract";
      return { ok: false, error: { code: "forbidden", message, details: { stake: m.declared } } };
    }
    return {
      ok: true,
      stake: m.declared,
      unsettled: unsettledFor(sql, m.address, "declared", 0),
      source: "declared",
      block: 0,
      checkedAt: now,
    };
  }
  const k = m.known;
  if (k?.stake_source === "chain" && now - k.stake_checked_at < STAKE_TTL_MS && stakeAtRisk(k) >= m.minStake) {
    return { ok: true, stake: k.stake, unsettled: k.unsettled, source: "chain", block: k.stake_block, checkedAt: k.stake_checked_at };
  }
  try {
    const read = await readStake(cfg, m.address);
    const unsettled = unsettledFor(sql, m.address, "chain", read.block);
    return { ok: true, stake: read.stake, unsettled, source: "chain", block: read.block, checkedAt: now };
  } catch (err) {
    const message = `cannot read this miner's stake from the staking contract: ${errorText(err)}`;
    return { ok: false, error: { code: "chain_unavailable", message, details: { staking: cfg.staking } } };
  }
}

/** Connected miners' stake read again once older than STAKE_TTL_MS (a few per pass; reads that fail wait). */
export async function refreshStakes(sql: SqlStorage, cfg: ChainConfig, online: string[]): Promise<void> {
  if (online.length === 0) return;
  const stale = sql
    .exec<{ address: string }>(
      `SELECT address FROM miners WHERE address IN (SELECT value FROM json_each(?)) AND stake_checked_at < ?
       ORDER BY stake_checked_at LIMIT 20`,
      JSON.stringify(online),
      Date.now() - STAKE_TTL_MS,
    )
    .toArray();
  await Promise.all(
    stale.map(async ({ address }) => {
      const read = await readStake(cfg, address).catch(() => null);
      if (read) recordStake(sql, address, read.stake, read.block, Date.now());
    }),
  );
}

/** One grant per address per FAUCET_ADDRESS_MS, FAUCET_GRANTS_PER_HOUR in all: a dev chain cannot be drained quickly. */
const FAUCET_ADDRESS_MS = 10 * 60_000;
const FAUCET_GRANTS_PER_HOUR = 30;
const HOUR_MS = 3600_000;

export type FaucetOutcome = { ok: true; eth: string; tokens: string; tx_hashes: string[] } | { ok: false; error: Failure };

/** How long until `address` may have a grant (0: now). */
function faucetWait(sql: SqlStorage, address: string, now: number): number {
  sql.exec(`DELETE FROM faucet_grants WHERE at < ?`, now - HOUR_MS);
  const last = sql.exec<{ at: number | null }>(`SELECT MAX(at) AS at FROM faucet_grants WHERE address = ?`, address).one().at;
  const hour = sql.exec<{ n: number; first: number | null }>(`SELECT COUNT(*) AS n, MIN(at) AS first FROM faucet_grants`).one();
  const perAddress = last === null ? 0 : last + FAUCET_ADDRESS_MS - now;
  const overall = hour.n >= FAUCET_GRANTS_PER_HOUR && hour.first !== null ? hour.first + HOUR_MS - now : 0;
  return Math.max(0, perAddress, overall);
}

/**
 * Sends gas money and mints tUSD to `address` from the router key (a minter on the local chain); `serial` runs the
 * sends with the pool's other router-key transactions, one at a time (nonces).
 */
export async function grantFaucet(
  sql: SqlStorage,
  env: Env,
  cfg: ChainConfig,
  address: string,
  serial: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<FaucetOutcome> {
  const to = address.toLowerCase();
  const now = Date.now();
  const wait = faucetWait(sql, to, now);
  if (wait > 0) {
    const message = `the faucet grants each address once per ${FAUCET_ADDRESS_MS / 60_000} min and ${FAUCET_GRANTS_PER_HOUR} grants per hour in all`;
    return { ok: false, error: { code: "rate_limited", message, details: { retry_after: Math.ceil(wait / 1000) } } };
  }
  // Counted before anything is sent: a failing chain does not make the faucet unlimited.
  sql.exec(`INSERT INTO faucet_grants (address, at) VALUES (?, ?)`, to, now);
  try {
    const tx_hashes = await serial(async () => {
      const out: string[] = [];
      const client = publicClient(cfg);
      for (const call of faucetCalls(cfg, to as Hex)) {
        const signed = await signRouterTx(env, cfg, call);
        await client.sendRawTransaction({ serializedTransaction: signed.raw });
        const receipt = await client.waitForTransactionReceipt({ hash: signed.hash, timeout: 15_000, pollingInterval: 250 });
        if (receipt.status !== "success") throw new Error(`faucet transaction ${signed.hash} reverted`);
        out.push(signed.hash);
      }
      return out;
    });
    return { ok: true, eth: FAUCET_ETH.toString(), tokens: FAUCET_TOKENS.toString(), tx_hashes };
  } catch (err) {
    return { ok: false, error: { code: "chain_unavailable", message: `faucet transaction failed: ${errorText(err)}` } };
  }
}
