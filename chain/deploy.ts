// Deploys the project's contracts and prepares development accounts on any EVM JSON-RPC endpoint (viem): TestUSD,
// MinerStaking, roles (minters, slashers) and funding (ETH + tUSD). chain/local-node.ts runs it against ganache;
// scripts/start.ts and the test harness use `prepareAccounts` to fund and authorise keys chosen after the chain
// started. The deployer owns both contracts and is the treasury that receives slashed stake.
import {
  type Account,
  type Chain,
  createPublicClient,
  createWalletClient,
  getAddress,
  type Hex,
  http,
  type PublicClient,
  parseEther,
  type Transport,
  type WalletClient,
} from "viem";
import { minerStakingAbi, minerStakingBytecode, minerStakingDeployedBytecode } from "./artifacts/MinerStaking.ts";
import { multicall3DeployedBytecode } from "./artifacts/Multicall3.ts";
import { testUsdAbi, testUsdBytecode, testUsdDeployedBytecode } from "./artifacts/TestUSD.ts";

export type Address = `0x${string}`;

/** Where Multicall3 lives on public chains; the local chain gets a copy there (chain/contracts/Multicall3.sol). */
export const MULTICALL3_ADDRESS: Address = "0xcA11bde05977b3631167028862bE2a173976CA11";
/** Published development mnemonic (Hardhat's and Anvil's): nothing of value may ever sit behind it. */
export const DEV_MNEMONIC = "test test test test test test test test test test test junk";
/** Default funding per development account. */
export const DEFAULT_ETH = parseEther("100");
export const DEFAULT_TUSD = 1_000_000n * 10n ** 6n;

export interface Clients {
  public: PublicClient<Transport, Chain>;
  wallet: WalletClient<Transport, Chain, Account>;
}

export function clients(rpcUrl: string, chain: Chain, account: Account): Clients {
  // ganache mines each transaction as it arrives: poll receipts often rather than every 4 s.
  const transport = http(rpcUrl, { retryCount: 0 });
  return {
    public: createPublicClient({ chain, transport, pollingInterval: 50 }),
    wallet: createWalletClient({ chain, transport, account, pollingInterval: 50 }),
  };
}

async function mined(c: Clients, hash: Hex): Promise<{ contractAddress?: Address | null }> {
  const receipt = await c.public.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  if (receipt.status !== "success") throw new Error(`transaction ${hash} reverted`);
  return receipt;
}

export interface Deployment {
  token: Address;
  staking: Address;
  unbondingDelay: number;
}

/** Deploys TestUSD and MinerStaking from the clients' account (owner, first minter, treasury). */
export async function deployContracts(c: Clients, unbondingDelay: number): Promise<Deployment> {
  const tokenTx = await c.wallet.deployContract({ abi: testUsdAbi, bytecode: testUsdBytecode });
  const token = (await mined(c, tokenTx)).contractAddress;
  if (!token) throw new Error("TestUSD deployment has no contract address");
  const stakingTx = await c.wallet.deployContract({
    abi: minerStakingAbi,
    bytecode: minerStakingBytecode,
    args: [token, BigInt(unbondingDelay)],
  });
  const staking = (await mined(c, stakingTx)).contractAddress;
  if (!staking) throw new Error("MinerStaking deployment has no contract address");
  return { token: getAddress(token), staking: getAddress(staking), unbondingDelay };
}

/**
 * True when a recorded deployment (a reused db) still runs this build's code: TestUSD byte for byte, MinerStaking
 * by size (its immutables differ per deployment), wired to the token with the same unbonding delay.
 */
export async function deploymentLive(c: Clients, d: Deployment): Promise<boolean> {
  const [tokenCode, stakingCode] = await Promise.all([c.public.getCode({ address: d.token }), c.public.getCode({ address: d.staking })]);
  if (tokenCode !== testUsdDeployedBytecode || stakingCode?.length !== minerStakingDeployedBytecode.length) return false;
  const [token, delay] = await Promise.all([
    c.public.readContract({ address: d.staking, abi: minerStakingAbi, functionName: "token" }),
    c.public.readContract({ address: d.staking, abi: minerStakingAbi, functionName: "unbondingDelay" }),
  ]);
  return token.toLowerCase() === d.token.toLowerCase() && delay === BigInt(d.unbondingDelay);
}

/** ganache only: puts Multicall3's runtime code at its canonical address (idempotent). */
export async function placeMulticall3(c: Clients): Promise<void> {
  const code = await c.public.getCode({ address: MULTICALL3_ADDRESS });
  if (code === multicall3DeployedBytecode) return;
  await c.public.request({
    method: "evm_setAccountCode" as "eth_chainId",
    params: [MULTICALL3_ADDRESS, multicall3DeployedBytecode] as never,
  });
}

export interface Roles {
  /** Made MinerStaking slashers (the router's key). */
  slashers?: Address[];
  /** Made TestUSD minters (the router's key, for the dev faucet). */
  minters?: Address[];
  /** Sent `eth` wei and minted `tusd` base units each. */
  fund?: Address[];
  eth?: bigint;
  tusd?: bigint;
}

/**
 * Grants roles and funds accounts from the deployer (owner of both contracts). Idempotent where it can be:
 * existing roles are left alone, and an account is topped up to `eth` / `tusd` rather than paid again.
 */
export async function prepareAccounts(c: Clients, d: Deployment, roles: Roles): Promise<void> {
  const eth = roles.eth ?? DEFAULT_ETH;
  const tusd = roles.tusd ?? DEFAULT_TUSD;
  const hashes: Hex[] = [];
  // Sequential sends from one account: viem fetches the nonce per call, so wait for each one's hash.
  for (const a of unique(roles.slashers)) {
    if (await c.public.readContract({ address: d.staking, abi: minerStakingAbi, functionName: "slashers", args: [a] })) continue;
    hashes.push(await c.wallet.writeContract({ address: d.staking, abi: minerStakingAbi, functionName: "setSlasher", args: [a, true] }));
  }
  for (const a of unique(roles.minters)) {
    if (await c.public.readContract({ address: d.token, abi: testUsdAbi, functionName: "minters", args: [a] })) continue;
    hashes.push(await c.wallet.writeContract({ address: d.token, abi: testUsdAbi, functionName: "setMinter", args: [a, true] }));
  }
  for (const a of unique(roles.fund)) {
    const balance = await c.public.getBalance({ address: a });
    if (balance < eth) hashes.push(await c.wallet.sendTransaction({ to: a, value: eth - balance }));
    const tokens = await c.public.readContract({ address: d.token, abi: testUsdAbi, functionName: "balanceOf", args: [a] });
    if (tokens < tusd)
      hashes.push(await c.wallet.writeContract({ address: d.token, abi: testUsdAbi, functionName: "mint", args: [a, tusd - tokens] }));
  }
  for (const h of hashes) await mined(c, h);
}

function unique(list: Address[] | undefined): Address[] {
  const seen = new Set<string>();
  return (list ?? []).filter((a) => !seen.has(a.toLowerCase()) && seen.add(a.toLowerCase()));
}
