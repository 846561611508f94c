import { type Address, createPublicClient, createWalletClient, type Hex, http, parseEther } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { minerStakingAbi, testUsdAbi, viemChain } from "../../shared/chain.ts";
import { Backoff, formatDelay, sleep } from "./backoff.ts";
import { describeError, type Logger } from "./log.ts";

// `--stake N` on a router with a chain: before registering, the agent makes its wallet's active stake in the
// staking contract at least N (tUSD base units): it tops up only the difference (so a restart stakes nothing
// twice), approving the staking contract for it first, and asks the router's development faucet for gas and tUSD
// when the wallet lacks them and the faucet is on. The router reads the stake from the contract, not from us.
// Without a chain the stake is only declared at registration (development routers accept that).

/** What GET /api/v1/chain answers (workers/routes/chain.ts). */
export interface ChainInfo {
  enabled: boolean;
  chain_id?: number;
  /** Named by development routers only (a production URL may carry a provider key): else --chain-rpc. */
  rpc_url?: string | null;
  token?: { address: Address; symbol: string; decimals: number };
  staking?: { address: Address; unbonding_delay_s: number };
  min_stake: number;
  faucet: false | { eth_wei: string; tokens: string };
}

/** Gas money below which the faucet is asked (a stake and an approval cost far less on any test chain). */
const MIN_GAS_WEI = parseEther("0.002");

export class StakeError extends Error {
  override name = "StakeError";
}

/**
 * The router's chain, or null when it has none (an older router without the route included). Retries while the
 * router is unreachable or failing, as registration does.
 */
export async function routerChain(routerUrl: string, log: Logger, doFetch: typeof fetch = fetch): Promise<ChainInfo | null> {
  const backoff = new Backoff();
  for (;;) {
    const res = await doFetch(`${routerUrl}/api/v1/chain`).catch((err: unknown) => err as Error);
    if (res instanceof Response && res.status === 404) return null;
    if (res instanceof Response && res.ok) {
      const info = (await res.json()) as ChainInfo;
      return info.enabled ? info : null;
    }
    if (res instanceof Response && res.status < 500)
      throw new StakeError(`GET /api/v1/chain: ${res.status} ${(await res.text()).slice(0, 300)}`);
    const delay = backoff.next();
    const why = res instanceof Response ? `${res.status}` : describeError(res);
    log.warn(`GET /api/v1/chain: ${why}; retry ${backoff.attempts} in ${formatDelay(delay)}`);
    await sleep(delay);
  }
}

export interface EnsureStakeOptions {
  routerUrl: string;
  account: PrivateKeyAccount;
  /** tUSD base units the wallet's active stake must reach. */
  target: bigint;
  /** The chain's JSON-RPC URL when the router's (GET /api/v1/chain `rpc_url`) is not reachable from here. */
  rpcUrl?: string;
  log: Logger;
  fetch?: typeof fetch;
}

/** Stakes up to `target`; resolves with the stake on chain, or null when the router has no chain (declare it). */
export async function ensureStake(opts: EnsureStakeOptions): Promise<bigint | null> {
  const { account, target, log } = opts;
  const doFetch = opts.fetch ?? fetch;
  const info = await routerChain(opts.routerUrl, log, doFetch);
  if (!info) return null;
  const rpcUrl = opts.rpcUrl ?? info.rpc_url;
  if (!rpcUrl) throw new StakeError(`the router does not name its chain's RPC URL: pass --chain-rpc <url> (chain id ${info.chain_id})`);
  if (!info.token || !info.staking || !info.chain_id) throw new StakeError("the router's /api/v1/chain names no contracts");
  const chain = viemChain({ rpcUrl, chainId: info.chain_id, token: info.token.address, staking: info.staking.address });
  const pub = createPublicClient({ chain, transport: http(rpcUrl) });
  const wallet = createWalletClient({ account, chain, transport: http(rpcUrl) });
  const staking = info.staking.address;
  const token = info.token.address;
  const me = account.address;

  const current = await pub.readContract({ address: staking, abi: minerStakingAbi, functionName: "stakeOf", args: [me] });
  if (current >= target) {
    log.event("stake_ok", `stake on chain: ${current} ${info.token.symbol} base units (wanted ${target})`, {
      staked: current.toString(),
      target: target.toString(),
    });
    return current;
  }
  const need = target - current;
  const funds = async () => ({
    tokens: await pub.readContract({ address: token, abi: testUsdAbi, functionName: "balanceOf", args: [me] }),
    gas: await pub.getBalance({ address: me }),
  });
  let have = await funds();
  if (have.tokens < need || have.gas < MIN_GAS_WEI) {
    if (!info.faucet) {
      throw new StakeError(
        `wallet ${me} holds ${have.tokens} ${info.token.symbol} base units and ${have.gas} wei: staking ${need} more needs ` +
          `that much ${info.token.symbol} and some gas (this router has no faucet)`,
      );
    }
    const res = await doFetch(`${opts.routerUrl}/api/v1/chain/faucet`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ address: me }),
    });
    if (!res.ok) throw new StakeError(`faucet: ${res.status} ${(await res.text()).slice(0, 300)}`);
    log.info("funded by the router's development faucet", { address: me });
    have = await funds();
    if (have.tokens < need) throw new StakeError(`after the faucet the wallet holds ${have.tokens}, short of the ${need} to stake`);
  }
  const send = async (what: string, hash: Hex) => {
    const receipt = await pub.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new StakeError(`${what} transaction ${hash} reverted`);
  };
  const allowance = await pub.readContract({ address: token, abi: testUsdAbi, functionName: "allowance", args: [me, staking] });
  if (allowance < need) {
    await send("approve", await wallet.writeContract({ address: token, abi: testUsdAbi, functionName: "approve", args: [staking, need] }));
  }
  await send("stake", await wallet.writeContract({ address: staking, abi: minerStakingAbi, functionName: "stake", args: [need] }));
  const staked = await pub.readContract({ address: staking, abi: minerStakingAbi, functionName: "stakeOf", args: [me] });
  log.event("staked", `staked ${need} more: ${staked} ${info.token.symbol} base units on chain`, {
    added: need.toString(),
    staked: staked.toString(),
    staking,
  });
  return staked;
}
