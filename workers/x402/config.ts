import { privateKeyToAccount } from "viem/accounts";
import { type ChainConfig, chainConfig, TOKEN_DOMAIN } from "../../shared/chain.ts";
import { ApiError } from "../lib/api-error.ts";
import { routerSigningKey } from "../lib/secrets.ts";

// x402 settings ([vars] X402_*; README "Payments: x402 and deposits"). x402 is on when the chain is configured (CHAIN_RPC_URL,
// TOKEN_ADDRESS: shared/chain.ts) and X402_ENABLED is not "false": prices are in the token's base units (tUSD,
// 6 decimals), paid with the "exact" scheme (an EIP-3009 transferWithAuthorization the facilitator submits).

/** A route family's price key (X402_ROUTE_PRICES) and the default number of tokens it is priced for. */
export type PriceKey = "ping" | "completion" | "delegate" | "validate" | "factcheck" | "chat" | "embedding";

export interface X402Config {
  chain: ChainConfig;
  /** CAIP-2 id, `eip155:<chain id>`. */
  network: `eip155:${number}`;
  asset: `0x${string}`;
  payTo: `0x${string}`;
  /** EIP-712 domain of the token (the client signs the authorization under it). */
  tokenName: string;
  tokenVersion: string;
  base: bigint;
  perToken: bigint;
  routePrices: Partial<Record<PriceKey, bigint>>;
  /** Seconds an authorization must stay valid for (the requirements' maxTimeoutSeconds; X402_MAX_TIMEOUT_S, ≤ 3600). */
  maxTimeoutSeconds: number;
  /** A remote facilitator (production); empty: the in-process one on FACILITATOR_KEY against CHAIN_RPC_URL. */
  facilitatorUrl: string | null;
  /** LLM tokens a session deposit gets per 1 tUSD (10^6 base units). */
  depositTokensPerToken: bigint;
}

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const UINT = /^\d{1,30}$/;

type Vars = Record<string, string | undefined>;
const vars = (env: Env) => env as unknown as Vars;

function uint(env: Env, name: string, fallback: bigint): bigint {
  const raw = (vars(env)[name] ?? "").trim();
  if (raw === "") return fallback;
  if (!UINT.test(raw)) throw new ApiError("configuration_error", `${name} must be an integer amount of token base units`, { var: name });
  return BigInt(raw);
}

/** `key:amount,…` per route family, e.g. `ping:1000,completion:20000`. */
function routePrices(env: Env): Partial<Record<PriceKey, bigint>> {
  const out: Partial<Record<PriceKey, bigint>> = {};
  for (const part of (vars(env).X402_ROUTE_PRICES ?? "").split(",")) {
    const [k, v] = part.split(":").map((s) => s.trim());
    if (!k) continue;
    if (!v || !UINT.test(v))
      throw new ApiError("configuration_error", "X402_ROUTE_PRICES must be `route:amount,…`", { var: "X402_ROUTE_PRICES" });
    out[k as PriceKey] = BigInt(v);
  }
  return out;
}

/** The x402 settings, or null when x402 is off (no chain, no facilitator URL nor FACILITATOR_KEY, or X402_ENABLED = "false"). */
export function x402Config(env: Env): X402Config | null {
  const v = vars(env);
  if ((v.X402_ENABLED ?? "").trim().toLowerCase() === "false") return null;
  const chain = chainConfig(v);
  if (!chain) return null;
  const facilitatorUrl = (v.X402_FACILITATOR_URL ?? "").trim() || null;
  // The in-process facilitator needs its own funded account: sharing the router's would race its slash txs' nonces.
  if (!facilitatorUrl && !(v.FACILITATOR_KEY ?? "").trim()) return null;
  const payTo = (v.X402_PAY_TO ?? "").trim() || env.ROUTER_ADDRESS || privateKeyToAccount(routerSigningKey(env)).address;
  if (!ADDRESS.test(payTo))
    throw new ApiError("configuration_error", "X402_PAY_TO is not a 0x-prefixed 20-byte address", { var: "X402_PAY_TO" });
  const timeout = Number(v.X402_MAX_TIMEOUT_S || 300);
  return {
    chain,
    network: `eip155:${chain.chainId}`,
    asset: chain.token,
    payTo: payTo as `0x${string}`,
    tokenName: TOKEN_DOMAIN.name,
    tokenVersion: TOKEN_DOMAIN.version,
    base: uint(env, "X402_PRICE_BASE", 10_000n),
    perToken: uint(env, "X402_PRICE_PER_TOKEN", 100n),
    routePrices: routePrices(env),
    // At most an hour: the Payments object keeps authorizations' rows a day (durable-objects/payments.ts).
    maxTimeoutSeconds: Number.isInteger(timeout) && timeout > 0 ? Math.min(timeout, 3600) : 300,
    facilitatorUrl,
    depositTokensPerToken: uint(env, "DEPOSIT_TOKENS_PER_TUSD", 1_000_000n),
  };
}

/** The price of one request: the route's base (X402_ROUTE_PRICES, else X402_PRICE_BASE) plus max_tokens × X402_PRICE_PER_TOKEN. */
export function priceOf(cfg: X402Config, key: PriceKey, maxTokens: number): bigint {
  const base = cfg.routePrices[key] ?? cfg.base;
  return base + (key === "ping" ? 0n : cfg.perToken * BigInt(Math.max(0, Math.floor(maxTokens))));
}

/** The one owner every x402-paid request runs as (like trial's): payers hold no key, so none may read tasks. */
export const X402_OWNER = "x402";
