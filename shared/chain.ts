// The chain the network settles on: the contracts' ABIs (generated from chain/contracts by `npm run
// build:contracts`), the router's chain configuration ([vars] CHAIN_RPC_URL, CHAIN_ID, TOKEN_ADDRESS,
// STAKING_ADDRESS) and a viem chain for it. The same code serves the local ganache chain of `npm start` and tests
// (chain id 31337) and any public EVM chain: only the configuration differs.
import { type Chain, defineChain, getAddress, isAddress } from "viem";
import { minerStakingAbi } from "../chain/artifacts/MinerStaking.ts";
import { testUsdAbi } from "../chain/artifacts/TestUSD.ts";

export { minerStakingAbi, testUsdAbi };

/** The token's EIP-712 domain (name, version; chain id and address come from the chain): what x402 payers sign. */
export const TOKEN_DOMAIN = { name: "Test USD", version: "1" } as const;
/** tUSD base units per token: stake and prices are counted in base units. */
export const TOKEN_DECIMALS = 6;
export const TOKEN_SYMBOL = "tUSD";
/** The chain id of the local development chain (ganache, started by `npm start` and the tests). */
export const LOCAL_CHAIN_ID = 31337;

export interface ChainConfig {
  rpcUrl: string;
  chainId: number;
  token: `0x${string}`;
  staking: `0x${string}`;
}

/** A chain variable that is set but unusable; the router answers 503 configuration_error naming `variable`. */
export class ChainConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(message);
    this.name = "ChainConfigError";
    this.variable = variable;
  }
}

function address(vars: Record<string, unknown>, name: string): `0x${string}` {
  const v = typeof vars[name] === "string" ? (vars[name] as string).trim() : "";
  if (!isAddress(v, { strict: false }))
    throw new ChainConfigError(name, `${name} must be a 0x-prefixed 20-byte address when CHAIN_RPC_URL is set`);
  return getAddress(v);
}

/**
 * The chain configuration from the router's vars (or any env-like record), or null when CHAIN_RPC_URL is empty:
 * the chain is off and stake and payments stay off-chain. Throws ChainConfigError when CHAIN_RPC_URL is set but
 * another variable is missing or malformed (half a configuration is an error, never "off").
 */
export function chainConfig(vars: Record<string, unknown>): ChainConfig | null {
  const rpcUrl = typeof vars.CHAIN_RPC_URL === "string" ? vars.CHAIN_RPC_URL.trim() : "";
  if (!rpcUrl) return null;
  if (!/^https?:\/\//.test(rpcUrl)) throw new ChainConfigError("CHAIN_RPC_URL", "CHAIN_RPC_URL must be an http(s) JSON-RPC URL");
  const chainId = Number(vars.CHAIN_ID);
  if (!Number.isSafeInteger(chainId) || chainId <= 0) throw new ChainConfigError("CHAIN_ID", "CHAIN_ID must be a positive integer");
  return { rpcUrl, chainId, token: address(vars, "TOKEN_ADDRESS"), staking: address(vars, "STAKING_ADDRESS") };
}

/** A viem Chain for the configured chain (any id; the native currency is called ETH everywhere here). */
export function viemChain(cfg: ChainConfig): Chain {
  return defineChain({
    id: cfg.chainId,
    name: cfg.chainId === LOCAL_CHAIN_ID ? "Local development chain" : `Chain ${cfg.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [cfg.rpcUrl] } },
  });
}

/** The x402 network name of a chain (CAIP-2). */
export const caip2 = (chainId: number): `eip155:${number}` => `eip155:${chainId}`;
