import { Hono } from "hono";
import { z } from "zod";
import { chainFacts, configFailure, FAUCET_ETH, FAUCET_TOKENS, routerChain } from "../../durable-objects/chain-stake.ts";
import { minerShard } from "../../durable-objects/pool-shards.ts";
import { TOKEN_DECIMALS, TOKEN_DOMAIN, TOKEN_SYMBOL } from "../../shared/chain.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { jsonBody } from "../lib/request-validation.ts";

// The chain the router settles on, for miners and payers: GET /api/v1/chain (public) names the token, the staking
// contract and the rules; POST /api/v1/chain/faucet (development with a chain only) funds a wallet from the
// router key so a local miner can stake. Stake itself is read by the NodePool (durable-objects/chain-stake.ts).

export const chain = new Hono<AppEnv>();

/** The contracts' figures change never (symbol, decimals) or rarely (unbonding delay): read once a minute. */
const FACTS_TTL_MS = 60_000;
let facts: { key: string; at: number; value: Awaited<ReturnType<typeof chainFacts>> } | null = null;

/** The configured chain; half a configuration answers 503 configuration_error. */
function configured(env: Env) {
  try {
    return routerChain(env);
  } catch (err) {
    throw ApiError.from(configFailure(err));
  }
}

const faucetOn = (env: Env) => env.ROUTER_ENV === "development" && configured(env) !== null;

chain.get("/chain", async (c) => {
  const cfg = configured(c.env);
  const minStake = Number(c.env.MIN_STAKE) || 0;
  if (!cfg) {
    // Development may declare stakes without a chain; anywhere else a declared stake is refused.
    return c.json({ enabled: false, min_stake: minStake, declared_stake: c.env.ROUTER_ENV === "development", faucet: false });
  }
  const key = `${cfg.rpcUrl}|${cfg.token}|${cfg.staking}`;
  if (!facts || facts.key !== key || Date.now() - facts.at > FACTS_TTL_MS) {
    const value = await chainFacts(cfg).catch((err: Error) => {
      throw new ApiError("chain_unavailable", `the chain does not answer: ${String(err.message ?? err).split("\n")[0]}`);
    });
    facts = { key, at: Date.now(), value };
  }
  const f = facts.value;
  return c.json({
    enabled: true,
    chain_id: cfg.chainId,
    // A production RPC URL often carries a provider key: only a development router names its own.
    rpc_url: c.env.ROUTER_ENV === "development" ? cfg.rpcUrl : null,
    token: {
      address: cfg.token,
      symbol: f.symbol || TOKEN_SYMBOL,
      decimals: Number.isFinite(f.decimals) ? f.decimals : TOKEN_DECIMALS,
      eip712: { name: TOKEN_DOMAIN.name, version: TOKEN_DOMAIN.version },
    },
    staking: { address: cfg.staking, unbonding_delay_s: f.unbonding_delay_s },
    /** tUSD base units a miner must have staked (less slashes not yet on chain) to register. */
    min_stake: minStake,
    declared_stake: false,
    faucet: faucetOn(c.env) ? { eth_wei: FAUCET_ETH.toString(), tokens: FAUCET_TOKENS.toString() } : false,
  });
});

const FaucetBody = z.object({ address: z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address") });

// Off: 404 whatever the body, before it is validated.
chain.use("/chain/faucet", async (c, next) => {
  if (!faucetOn(c.env)) {
    throw new ApiError("not_found", "no faucet here: it runs only when ROUTER_ENV=development and a chain is configured");
  }
  await next();
});

chain.post("/chain/faucet", jsonBody(FaucetBody), async (c) => {
  const { address } = c.req.valid("json");
  const outcome = await minerShard(c.env, address).faucet(address);
  if (!outcome.ok) {
    const retry = (outcome.error.details as { retry_after?: number } | undefined)?.retry_after;
    if (retry) c.header("Retry-After", String(retry));
    throw ApiError.from(outcome.error);
  }
  return c.json(outcome);
});
