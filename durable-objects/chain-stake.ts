import {
  type Address,
  createPublicClient,
  createWalletClient,
  encodeFunctionData,
  type Hex,
  http,
  keccak256,
  type PublicClient,
  parseEther,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type ChainConfig, ChainConfigError, chainConfig, minerStakingAbi, testUsdAbi, viemChain } from "../shared/chain.ts";
import type { Failure } from "../shared/errors.ts";

// The NodePool's view of the staking contract (shared/chain.ts names it): stake reads for registration and the
// alarm's refresh, and the router's own transactions (slash batches, the dev faucet). Every transaction from the
// router key is signed here before it is sent, so its hash is known (and written) before the chain sees it.

/** How long a stake read stays good for registration and the alarm's refresh of connected miners. */
export const STAKE_TTL_MS = 60_000;
/** One RPC call's limit: a registration waits for it. */
const RPC_TIMEOUT_MS = 5_000;

export interface StakeRead {
  stake: number;
  /** A block at or below the one the stake was read at: slashes confirmed after it are not in the figure yet. */
  block: number;
}

const clients = new Map<string, PublicClient>();

/** One public client per RPC URL (viem's http transport: fetch, which workerd has). */
export function publicClient(cfg: ChainConfig): PublicClient {
  let c = clients.get(cfg.rpcUrl);
  if (!c) {
    c = createPublicClient({ chain: viemChain(cfg), transport: http(cfg.rpcUrl, { timeout: RPC_TIMEOUT_MS, retryCount: 1 }) });
    clients.set(cfg.rpcUrl, c);
  }
  return c;
}

/**
 * The chain this router is configured for, or null (chain off: stakes are declared, development only). Half a
 * configuration throws shared/chain.ts ChainConfigError (callers answer 503 configuration_error).
 */
export function routerChain(env: Env): ChainConfig | null {
  return chainConfig(env as unknown as Record<string, unknown>);
}

/** routerChain for background work (alarms, outcome batches): half a configuration is logged and counts as none. */
export function backgroundChain(env: Env): ChainConfig | null {
  try {
    return routerChain(env);
  } catch (err) {
    console.error(`chain configuration: ${(err as Error).message}`);
    return null;
  }
}

/** A ChainConfigError as the house failure; anything else is rethrown. */
export function configFailure(err: unknown): Failure {
  if (err instanceof ChainConfigError) return { code: "configuration_error", message: err.message, details: { var: err.variable } };
  throw err;
}

/** A miner's active stake on chain (tUSD base units). Throws when the chain does not answer. */
export async function readStake(cfg: ChainConfig, miner: string): Promise<StakeRead> {
  const client = publicClient(cfg);
  const block = await client.getBlockNumber({ cacheTime: 0 });
  const stake = await client.readContract({
    address: cfg.staking,
    abi: minerStakingAbi,
    functionName: "stakeOf",
    args: [miner as Address],
  });
  return { stake: toSafeNumber(stake), block: Number(block) };
}

/** Base units fit a JS number up to 2^53 − 1 (9 × 10^9 tUSD); anything above counts as that. */
export function toSafeNumber(v: bigint): number {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** The router's key (ROUTER_SIGNING_KEY, 0x optional): the authorised slasher and, on a local chain, a minter. */
export function routerAccount(env: Env) {
  return privateKeyToAccount(`0x${env.ROUTER_SIGNING_KEY.replace(/^0x/, "").toLowerCase()}` as Hex);
}

/** A transaction signed by the router key, not yet sent: its hash is final before the chain sees it. */
export interface SignedTx {
  hash: Hex;
  raw: Hex;
  nonce: number;
}

/** Signs a call from the router key at the account's next nonce (`nonce`: that nonce instead). */
export async function signRouterTx(
  env: Env,
  cfg: ChainConfig,
  call: { to: Address; data: Hex; value?: bigint },
  nonce?: number,
): Promise<SignedTx> {
  const account = routerAccount(env);
  const wallet = createWalletClient({ account, chain: viemChain(cfg), transport: http(cfg.rpcUrl, { timeout: RPC_TIMEOUT_MS }) });
  const next = nonce ?? (await publicClient(cfg).getTransactionCount({ address: account.address, blockTag: "pending" }));
  const request = await wallet.prepareTransactionRequest({ ...call, nonce: next, account, chain: viemChain(cfg) });
  const raw = await account.signTransaction(request as Parameters<typeof account.signTransaction>[0]);
  return { hash: keccak256(raw), raw, nonce: next };
}

/** The calldata of one slash batch. */
export function slashBatchData(entries: { miner: string; amount: number; evidence: Hex }[]): Hex {
  return encodeFunctionData({
    abi: minerStakingAbi,
    functionName: "slashBatch",
    args: [entries.map((e) => e.miner as Address), entries.map((e) => BigInt(e.amount)), entries.map((e) => e.evidence)],
  });
}

/** Dev faucet grant: gas money and tUSD (the router key is a minter on the local chain). */
export const FAUCET_ETH = parseEther("0.05");
export const FAUCET_TOKENS = 1_000_000_000n; // 1000 tUSD (6 decimals)

export function faucetCalls(cfg: ChainConfig, to: Address): { to: Address; data: Hex; value?: bigint }[] {
  return [
    { to, data: "0x", value: FAUCET_ETH },
    { to: cfg.token, data: encodeFunctionData({ abi: testUsdAbi, functionName: "mint", args: [to, FAUCET_TOKENS] }) },
  ];
}

/** The configured chain's figures /api/v1/chain shows (read from the contracts; cached by the caller). */
export async function chainFacts(cfg: ChainConfig): Promise<{ symbol: string; decimals: number; unbonding_delay_s: number }> {
  const client = publicClient(cfg);
  const [symbol, decimals, delay] = await Promise.all([
    client.readContract({ address: cfg.token, abi: testUsdAbi, functionName: "symbol" }),
    client.readContract({ address: cfg.token, abi: testUsdAbi, functionName: "decimals" }),
    client.readContract({ address: cfg.staking, abi: minerStakingAbi, functionName: "unbondingDelay" }),
  ]);
  return { symbol: String(symbol), decimals: Number(decimals), unbonding_delay_s: Number(delay) };
}
