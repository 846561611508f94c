import { type Hex, verifyMessage } from "viem";
import type { MinerRegisterRequest } from "../shared/api.ts";
import type { Failure } from "../shared/errors.ts";
import { type RouterIdentity, registrationMessage } from "../shared/signing.ts";
import { bumpEpoch, saveContexts } from "./miner-credentials.ts";
import type { MinerClaims } from "./miner-sockets.ts";
import type { MinerRow } from "./pool-miners.ts";
import { registrationStake } from "./pool-stake.ts";
import { type Policy, settleStake, stakeAtRisk } from "./reputation.ts";

// Registration on the NodePool (in a sharded pool, on the miner's shard): a one-time challenge naming this
// deployment, then the signed challenge, the stake check and the miner's row, and a new token epoch.

const CHALLENGE_TTL_MS = 5 * 60_000;

export interface Challenge {
  address: string;
  nonce: string;
  message: string;
  expires_at: number;
  router: RouterIdentity;
}

export function issueChallenge(sql: SqlStorage, address: string, router: RouterIdentity): Challenge {
  const now = Date.now();
  const nonce = crypto.randomUUID().replaceAll("-", "");
  const expires_at = now + CHALLENGE_TTL_MS;
  sql.exec(`DELETE FROM challenges WHERE expires_at < ?`, now);
  sql.exec(`INSERT INTO challenges (nonce, address, expires_at) VALUES (?, ?, ?)`, nonce, address.toLowerCase(), expires_at);
  return { address, nonce, message: registrationMessage(address as Hex, nonce, router), expires_at, router };
}

export async function registerMiner(
  sql: SqlStorage,
  env: Env,
  req: MinerRegisterRequest,
  router: RouterIdentity,
  policy: Policy,
  /** Before the row is read: a pool handover may bring the miner's state from its old shard (pool-handover.ts). */
  adopt?: (address: string) => Promise<Failure | null>,
): Promise<{ ok: true; claims: MinerClaims } | { ok: false; error: Failure }> {
  const address = req.address.toLowerCase();
  const row = sql
    .exec<{ address: string; expires_at: number }>(`SELECT address, expires_at FROM challenges WHERE nonce = ?`, req.nonce)
    .toArray()[0];
  if (!row || row.address !== address || row.expires_at < Date.now()) {
    return { ok: false, error: { code: "unauthorized", message: "unknown, expired or foreign challenge nonce" } };
  }
  const valid = await verifyMessage({
    address: req.address as Hex,
    message: registrationMessage(req.address as Hex, req.nonce, router),
    signature: req.signature as Hex,
  }).catch(() => false);
  if (!valid) return { ok: false, error: { code: "unauthorized", message: "signature does not prove the address" } };
  sql.exec(`DELETE FROM challenges WHERE nonce = ?`, req.nonce);
  const moved = adopt ? await adopt(address) : null;
  if (moved) return { ok: false, error: moved };
  const known = sql.exec<MinerRow>(`SELECT * FROM miners WHERE address = ?`, address).toArray()[0];
  const figure = await registrationStake(sql, env, {
    address,
    declared: req.stake ?? 0,
    known,
    minStake: policy.minStake,
  });
  if (!figure.ok) return figure;
  const { minStake } = policy;
  // Slashes stick to the address: registering again undoes none (the ones the chain has taken are in its figure).
  const atRisk = stakeAtRisk(figure);
  if (atRisk < minStake) {
    return {
      ok: false,
      error: {
        code: "forbidden",
        message: `stake ${atRisk} is below the pool minimum of ${minStake}${figure.source === "chain" ? " (read from the staking contract; stake more from this wallet)" : ""}`,
        details: { stake: atRisk, staked: figure.stake, unsettled_slashes: figure.unsettled, min_stake: minStake, source: figure.source },
      },
    };
  }
  sql.exec(
    `INSERT INTO miners (address, name, version, models, device, capacity, registered_at, stake, stake_source, stake_block, stake_checked_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET name = excluded.name, version = excluded.version, models = excluded.models,
         device = excluded.device, capacity = excluded.capacity, stake = excluded.stake, stake_source = excluded.stake_source,
         stake_block = excluded.stake_block, stake_checked_at = excluded.stake_checked_at`,
    address,
    req.name ?? null,
    req.version ?? null,
    JSON.stringify(req.models),
    req.device,
    req.capacity,
    Date.now(),
    figure.stake,
    figure.source,
    figure.block,
    figure.checkedAt,
  );
  settleStake(sql, address);
  saveContexts(sql, address, req.contexts);
  // A new registration revokes every older token of this miner (they still verify, but no longer connect).
  const epoch = bumpEpoch(sql, address);
  const speed = req.tokens_per_s === undefined ? {} : { tokens_per_s: req.tokens_per_s };
  return { ok: true, claims: { address, capacity: req.capacity, models: req.models, device: req.device, epoch, ...speed } };
}
