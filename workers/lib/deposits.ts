import { encodePaymentResponseHeader } from "@x402/core/http";
import type { Context } from "hono";
import { createPublicClient, type Hash, http, parseEventLogs } from "viem";
import { payments } from "../../durable-objects/stubs.ts";
import { testUsdAbi, viemChain } from "../../shared/chain.ts";
import type { DepositRecord, SessionConfig } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import type { X402Config } from "../x402/config.ts";
import { paymentRequired, price, releasePayment, settlePayment, verifyPayment, x402Enabled } from "../x402/payment.ts";
import { ApiError } from "./api-error.ts";
import { visibleSession } from "./tenancy.ts";

// Paid session deposits (POST /api/v1/sessions/:sessionId/deposits, routes/sessions.ts): instead of the deposit an
// owner declares at creation, tUSD paid to the router (X402_PAY_TO) and converted at DEPOSIT_TOKENS_PER_TUSD into
// the session's LLM tokens, its source recorded in the session's `deposits`:
// - on chain: the client transfers tUSD to the pay-to address itself and posts `{tx_hash}`; the router reads the
//   receipt's Transfer logs of TOKEN_ADDRESS to that address, and the Payments object lets each hash credit once.
// - x402: `{amount}` with an x402 payment for exactly that amount (402 with the requirements without one); the
//   payment is settled first, then credited.

/** LLM tokens for `amount` tUSD base units (10^6 per tUSD). */
export function depositTokens(cfg: X402Config, amount: bigint): number {
  const tokens = (amount * cfg.depositTokensPerToken) / 1_000_000n;
  if (tokens > BigInt(Number.MAX_SAFE_INTEGER))
    throw new ApiError("invalid_request", "the deposit is too large", [{ path: "amount", message: "too large" }]);
  return Number(tokens);
}

async function credit(c: Context<AppEnv>, sessionId: string, entry: DepositRecord): Promise<SessionConfig> {
  const { queue } = await visibleSession(c.env, sessionId, c.get("owner"));
  const config = await queue.addDeposit(entry);
  if (!config) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return config;
}

/** The tUSD a transaction transferred to the pay-to address, and from whom (404-free: the tx must exist and have succeeded). */
async function transferred(cfg: X402Config, hash: Hash): Promise<{ amount: bigint; payer: string }> {
  const client = createPublicClient({ chain: viemChain(cfg.chain), transport: http(cfg.chain.rpcUrl) });
  const receipt = await client.getTransactionReceipt({ hash }).catch(() => null);
  if (!receipt)
    throw new ApiError("invalid_request", `no mined transaction ${hash} on chain ${cfg.chain.chainId}`, [
      { path: "tx_hash", message: "unknown transaction" },
    ]);
  if (receipt.status !== "success")
    throw new ApiError("invalid_request", `transaction ${hash} reverted`, [{ path: "tx_hash", message: "reverted" }]);
  const logs = parseEventLogs({
    abi: testUsdAbi,
    eventName: "Transfer",
    logs: receipt.logs.filter((l) => l.address.toLowerCase() === cfg.asset.toLowerCase()),
  });
  const mine = logs.filter((l) => (l.args as { to: string }).to.toLowerCase() === cfg.payTo.toLowerCase());
  const amount = mine.reduce((sum, l) => sum + (l.args as { value: bigint }).value, 0n);
  if (amount === 0n) {
    throw new ApiError("invalid_request", `transaction ${hash} transfers no ${cfg.asset} token to ${cfg.payTo}`, [
      { path: "tx_hash", message: "no token transfer to the router" },
    ]);
  }
  return { amount, payer: (mine[0].args as { from: string }).from.toLowerCase() };
}

/** A deposit paid on chain: credited once per transaction hash. */
export async function chainDeposit(c: Context<AppEnv>, sessionId: string, hash: Hash) {
  const cfg = x402Enabled(c);
  await visibleSession(c.env, sessionId, c.get("owner")); // 404 before the chain is asked
  const tx = hash.toLowerCase() as Hash;
  const { amount, payer } = await transferred(cfg, tx);
  const tokens = depositTokens(cfg, amount);
  const claim = await payments(c.env).claimDeposit(tx, sessionId, String(amount));
  if (!claim.ok)
    throw new ApiError("conflict", `transaction ${tx} was credited already`, {
      session_id: claim.session_id === sessionId ? sessionId : null,
      at: claim.at,
    });
  const entry: DepositRecord = { source: "chain", tokens, amount: String(amount), tx_hash: tx, payer, at: Date.now() };
  try {
    return { entry, config: await credit(c, sessionId, entry) };
  } catch (err) {
    await payments(c.env).unclaimDeposit(tx);
    throw err;
  }
}

/** A deposit paid with x402: verified, settled, then credited. */
export async function x402Deposit(c: Context<AppEnv>, sessionId: string, amount: bigint) {
  const cfg = x402Enabled(c);
  await visibleSession(c.env, sessionId, c.get("owner"));
  const tokens = depositTokens(cfg, amount);
  const priced = price(c, cfg, "completion", 0, `A deposit of ${tokens} LLM tokens for session ${sessionId}`, amount);
  const verified = await verifyPayment(c, priced);
  const settled = await settlePayment(c, verified).catch(async (err) => {
    await releasePayment(c, verified);
    throw err;
  });
  if (!settled.success)
    throw await paymentRequired(c, priced, `settlement failed: ${settled.errorReason ?? "unknown"}`, settled.errorReason);
  c.header("PAYMENT-RESPONSE", encodePaymentResponseHeader(settled));
  const entry: DepositRecord = {
    source: "x402",
    tokens,
    amount: String(amount),
    tx_hash: settled.transaction.toLowerCase(),
    payer: verified.payer,
    at: Date.now(),
  };
  return { entry, config: await credit(c, sessionId, entry) };
}
