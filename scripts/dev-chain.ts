// The chain `npm start` gives the router. By default a local one: chain/local-node.ts (ganache) persisted under
// .wrangler/chain beside the Durable Objects' state, with the router's key (ROUTER_SIGNING_KEY: slasher, minter for
// the dev faucet, gas) and FACILITATOR_KEY (x402 settlement gas) funded. With CHAIN_RPC_URL in the environment or
// .dev.vars it starts nothing and uses that chain (a public testnet): TOKEN_ADDRESS, STAKING_ADDRESS and CHAIN_ID
// must then be set the same way, and the keys funded and authorised there by whoever owns the contracts.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { privateKeyToAccount } from "viem/accounts";

export const CHAIN_VARS = ["CHAIN_RPC_URL", "CHAIN_ID", "TOKEN_ADDRESS", "STAKING_ADDRESS"] as const;

export interface DevChain {
  /** The router's chain vars, to pass with --var. */
  vars: Record<string, string>;
  /** The local chain's process (none for an external chain). */
  child?: ChildProcess;
  /** What to tell the developer. */
  summary: string;
}

const address = (key: string | undefined) =>
  key && /^0x[0-9a-fA-F]{64}$/.test(key) ? privateKeyToAccount(key as `0x${string}`).address : undefined;

/** `devVars`: .dev.vars' values (the environment wins over them). `onLine`: the chain's stderr lines. */
export async function startDevChain(root: string, devVars: Record<string, string>, onLine: (line: string) => void): Promise<DevChain> {
  const external = process.env.CHAIN_RPC_URL ?? devVars.CHAIN_RPC_URL;
  if (external) {
    const vars: Record<string, string> = {};
    // Values from .dev.vars reach wrangler dev by themselves; the environment's are passed on.
    for (const k of CHAIN_VARS) if (process.env[k]) vars[k] = process.env[k]!;
    const show = (k: string) => process.env[k] ?? devVars[k] ?? "from wrangler.toml";
    return {
      vars,
      summary: `Chain (external, CHAIN_RPC_URL): ${external}, chain id ${show("CHAIN_ID")}, token ${show("TOKEN_ADDRESS")}, staking ${show("STAKING_ADDRESS")}`,
    };
  }
  const router = address(devVars.ROUTER_SIGNING_KEY);
  const facilitator = address(devVars.FACILITATOR_KEY);
  const args = [join(root, "chain/local-node.ts"), "--port", process.env.CHAIN_PORT ?? "8545", "--db", join(root, ".wrangler/chain")];
  if (router) args.push("--slasher", router, "--minter", router, "--fund", router);
  if (facilitator) args.push("--fund", facilitator);
  const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  createInterface({ input: child.stderr! }).on("line", onLine);
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", resolve);
    child.once("exit", (code) => reject(new Error(`the local chain exited (${code}) before it was ready`)));
  });
  const info = JSON.parse(line) as {
    rpcUrl: string;
    chainId: number;
    token: string;
    staking: string;
    reused: boolean;
    accounts: { address: string }[];
  };
  return {
    vars: { CHAIN_RPC_URL: info.rpcUrl, CHAIN_ID: String(info.chainId), TOKEN_ADDRESS: info.token, STAKING_ADDRESS: info.staking },
    child,
    summary: [
      `Local chain ${info.rpcUrl} (ganache, chain id ${info.chainId}, state in .wrangler/chain${info.reused ? ", contracts reused" : ""})`,
      `    TestUSD (tUSD) ${info.token}   MinerStaking ${info.staking}`,
      `    router ${router ?? "?"} (slasher, minter) and facilitator ${facilitator ?? "(no FACILITATOR_KEY)"} funded;`,
      `    ${info.accounts.length} development accounts from the mnemonic "test test … junk" hold 100 ETH + 1,000,000 tUSD each`,
    ].join("\n"),
  };
}
