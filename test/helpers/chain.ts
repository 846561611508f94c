import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { type Hex, parseEther } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type Address, type Clients, clients, prepareAccounts, type Roles } from "../../chain/deploy.ts";
import { testUsdAbi, viemChain } from "../../shared/chain.ts";

// The real local chain for integration tests: chain/local-node.ts (ganache, chain id 31337, a block per
// transaction) in a child process, with TestUSD and MinerStaking deployed and development accounts funded.

const ROOT = resolve(import.meta.dirname, "../..");

export interface ChainAccount {
  address: Address;
  privateKey: Hex;
}

export interface LocalChain {
  rpcUrl: string;
  chainId: number;
  token: Address;
  staking: Address;
  unbondingDelay: number;
  /** Owns both contracts, mints, grants roles; receives slashed stake (the treasury). */
  deployer: ChainAccount;
  /** Funded with 100 ETH and 1,000,000 tUSD each; free for tests to use. */
  accounts: ChainAccount[];
  /** Funded like `accounts` but kept apart: startRouter({chain}) gives it to the router as FACILITATOR_KEY. */
  facilitator: ChainAccount;
  process: ChildProcess;
  log: () => string;
  stop(): Promise<void>;
}

/**
 * Starts a fresh chain (about 2 s). `slasher`, `minters` and `fund` are granted and funded at start; startRouter
 * ({chain}) does the same for its own ROUTER_SIGNING_KEY, so most tests need none of them.
 */
export async function startChain(
  opts: { slasher?: Address; minters?: Address[]; fund?: Address[]; unbondingDelay?: number; accounts?: number } = {},
): Promise<LocalChain> {
  const args = [join(ROOT, "chain/local-node.ts"), "--port", "0", "--accounts", String((opts.accounts ?? 8) + 2)];
  if (opts.unbondingDelay !== undefined) args.push("--unbonding-delay", String(opts.unbondingDelay));
  if (opts.slasher) args.push("--slasher", opts.slasher);
  for (const m of opts.minters ?? []) args.push("--minter", m);
  for (const f of opts.fund ?? []) args.push("--fund", f);
  const child = spawn(process.execPath, args, { cwd: ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`local chain did not start in 60 s:\n${output}`)), 60_000);
    createInterface({ input: child.stdout! }).once("line", (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`local chain exited ${code}:\n${output}`));
    });
  });
  const info = JSON.parse(line) as Omit<LocalChain, "facilitator" | "process" | "log" | "stop">;
  const accounts = [...info.accounts];
  const facilitator = accounts.pop()!;
  return {
    ...info,
    accounts,
    facilitator,
    process: child,
    log: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 5000);
      process.kill(-child.pid!, "SIGTERM");
      await exited;
      clearTimeout(timer);
    },
  };
}

/** viem public + wallet clients for one of the chain's accounts (or any private key). */
export function chainClients(chain: Pick<LocalChain, "rpcUrl" | "chainId" | "token" | "staking">, privateKey: Hex): Clients {
  return clients(chain.rpcUrl, viemChain(chain), privateKeyToAccount(privateKey));
}

/** Grants roles and funds accounts from the deployer (what startRouter({chain}) does for the router's key). */
export async function prepareChainAccounts(chain: LocalChain, roles: Roles): Promise<void> {
  await prepareAccounts(chainClients(chain, chain.deployer.privateKey), chain, roles);
}

/** The router's key on the chain: funded with ETH, a MinerStaking slasher and a TestUSD minter (dev faucet). */
export async function authoriseRouter(chain: LocalChain, routerKey: Hex): Promise<Address> {
  const { address } = privateKeyToAccount(routerKey);
  await prepareChainAccounts(chain, { slashers: [address], minters: [address], fund: [address], eth: parseEther("100"), tusd: 0n });
  return address;
}

export async function tokenBalance(chain: LocalChain, address: Address): Promise<bigint> {
  return chainClients(chain, chain.deployer.privateKey).public.readContract({
    address: chain.token,
    abi: testUsdAbi,
    functionName: "balanceOf",
    args: [address],
  });
}

async function rpc(rpcUrl: string, method: string, params: unknown[]): Promise<unknown> {
  const res = await fetch(rpcUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const body = (await res.json()) as { result?: unknown; error?: { message: string } };
  if (body.error) throw new Error(`${method}: ${body.error.message}`);
  return body.result;
}

/**
 * Moves the chain's clock forward and mines a block at the new time. The offset stays for the chain's life: later
 * blocks are `seconds` ahead of the wall clock (an x402 authorisation valid for minutes by the wall clock may then
 * be expired on chain — use a chain of its own for time travel).
 */
/** EIP-3009 typed data: what a payer signs to authorise a TestUSD transfer (the x402 "exact" scheme). */
export const TRANSFER_WITH_AUTHORIZATION_TYPES = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
} as const;

export async function increaseTime(rpcUrl: string, seconds: number): Promise<void> {
  await rpc(rpcUrl, "evm_increaseTime", [seconds]);
  await rpc(rpcUrl, "evm_mine", []);
}
