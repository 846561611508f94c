import { encodePaymentResponseHeader } from "@x402/core/http";
import type { Context } from "hono";
import { type Address, createPublicClient, type Hash, type Hex, http, parseEventLogs, recoverTypedDataAddress } from "viem";
import { deploymentDomain } from "../../durable-objects/deployment.ts";
import type { DepositClaim } from "../../durable-objects/payments.ts";
import { payments } from "../../durable-objects/stubs.ts";
import { testUsdAbi, viemChain } from "../../shared/chain.ts";
import { depositTypedData } from "../../shared/signing.ts";
import type { DepositRecord, SessionConfig } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import type { X402Config } from "../x402/config.ts";
import { paymentRequired, price, releasePayment, settlePayment, verifyPayment, x402Enabled } from "../x402/payment.ts";
import { ApiError } from "./api-error.ts";
import { visibleSession } from "./tenancy.ts";

// Paid session deposits (POST /api/v1/sessions/:sessionId/deposits, routes/sessions.ts): instead of the deposit an
// owner declares at creation, tUSD paid to the router (X402_PAY_TO) and converted at DEPOSIT_TOKENS_PER_TUSD into
// the session's LLM tokens, its source recorded in the session's `deposits`:
// - on chain: the payer transfers tUSD to the pay-to address itself and posts `{tx_hash, signature}`, the signature
//   its EIP-712 `Deposit {session, tx}` under the deployment's domain (GET /api/v1/info `receipt_domain`). The router
//   credits only the receipt's Transfer logs of TOKEN_ADDRESS to that address from the signer, in a transaction the
//   signer sent, and the Payments object lets each hash credit once: a hash seen on chain or in the mempool is
//   worth nothing to anyone but its payer, and a signature names one session.
// - x402: `{amount}` with an x402 payment for exactly that amount (402 with the requirements without one); the
//   payment is settled first (Payments claims every settlement's hash, so no `{tx_hash}` credits it again), then
//   credited. When the credit fails (the session vanished meanwhile), the settlement is given back to its payer,
//   who may post it as `{tx_hash, signature}` to another session.

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

/** Who signed `Deposit {session, tx}`, or 400 on the `signature` field. */
async function depositSigner(c: Context<AppEnv>, sessionId: string, tx: Hash, signature: string | undefined): Promise<Address> {
  const refused = (why: string) =>
    new ApiError(
      "invalid_request",
      `a chain deposit needs \`signature\`: the payer's EIP-712 signature of Deposit {session, tx} under the router's receipt_domain (${why})`,
      [{ path: "signature", message: why }],
    );
  if (!signature) throw refused("missing");
  const data = depositTypedData({ session: sessionId, tx }, deploymentDomain(c.env));
  const signer = await recoverTypedDataAddress({ ...data, signature: signature as Hex }).catch(() => null);
  if (!signer) throw refused("not a valid signature");
  return signer.toLowerCase() as Address;
}

/**
 * The tUSD `payer` transferred to the pay-to address in a transaction, and whether someone else sent it (`relayed`:
 * an x402 settlement, sent by the facilitator). 400 when the tx is unknown, reverted, or pays the router nothing
 * from `payer`.
 */
async function transferred(cfg: X402Config, hash: Hash, payer: Address): Promise<{ amount: bigint; relayed: boolean }> {
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
  const toRouter = logs.filter((l) => (l.args as { to: string }).to.toLowerCase() === cfg.payTo.toLowerCase());
  if (toRouter.length === 0) {
    throw new ApiError("invalid_request", `transaction ${hash} transfers no ${cfg.asset} token to ${cfg.payTo}`, [
      { path: "tx_hash", message: "no token transfer to the router" },
    ]);
  }
  const mine = toRouter.filter((l) => (l.args as { from: string }).from.toLowerCase() === payer);
  const amount = mine.reduce((sum, l) => sum + (l.args as { value: bigint }).value, 0n);
  if (amount === 0n) {
    throw new ApiError("invalid_request", `transaction ${hash} transfers nothing to ${cfg.payTo} from the signer ${payer}`, [
      { path: "signature", message: "the signer is not the transfer's payer" },
    ]);
  }
  return { amount, relayed: receipt.from.toLowerCase() !== payer };
}

/** 409 for a hash claimed before, 400 for a transfer the payer did not send (an x402 settlement). */
function refusedClaim(claim: Exclude<DepositClaim, { ok: true }>, tx: Hash, sessionId: string, payer: string): ApiError {
  if (claim.reason === "relayed")
    return new ApiError("invalid_request", `transaction ${tx} was not sent by its payer ${payer}: only a transfer the payer sent credits`, [
      { path: "tx_hash", message: "sent by someone else (an x402 settlement is credited by its own payment)" },
    ]);
  const what = claim.kind === "x402" ? "settled an x402 payment, which paid for its own request" : "was credited already";
  return new ApiError("conflict", `transaction ${tx} ${what}`, {
    session_id: claim.session_id === sessionId ? sessionId : null,
    kind: claim.kind,
    at: claim.at,
  });
}

/** A deposit paid on chain by the signer of `signature`: credited once per transaction hash. */
export async function chainDeposit(c: Context<AppEnv>, sessionId: string, hash: Hash, signature: string | undefined) {
  const cfg = x402Enabled(c);
  await visibleSession(c.env, sessionId, c.get("owner")); // 404 before the chain is asked
  const tx = hash.toLowerCase() as Hash;
  const payer = await depositSigner(c, sessionId, tx, signature);
  const { amount, relayed } = await transferred(cfg, tx, payer);
  const tokens = depositTokens(cfg, amount);
  const claim = await payments(c.env).claimDeposit(tx, sessionId, String(amount), payer, relayed);
  if (!claim.ok) throw refusedClaim(claim, tx, sessionId, payer);
  const entry: DepositRecord = { source: "chain", tokens, amount: String(amount), tx_hash: tx, payer, at: Date.now() };
  try {
    return { entry, config: await credit(c, sessionId, entry) };
  } catch (err) {
    // Given back only when the session refused it; after an unknown outcome (the credit may have landed) it stays claimed.
    if (err instanceof ApiError) await payments(c.env).unclaimDeposit(tx);
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
  const tx = settled.transaction.toLowerCase();
  const entry: DepositRecord = { source: "x402", tokens, amount: String(amount), tx_hash: tx, payer: verified.payer, at: Date.now() };
  try {
    return { entry, config: await credit(c, sessionId, entry) };
  } catch (err) {
    const details = { tx_hash: tx, payer: verified.payer, amount: String(amount) };
    // An unknown outcome (the credit may have landed): the settlement stays claimed; the session's deposits tell.
    if (!(err instanceof ApiError))
      throw new ApiError("internal_error", `the payment settled in ${tx} but crediting session ${sessionId} failed: ${String(err)}`, {
        ...details,
        claimable: false,
      });
    // The session refused it (gone meanwhile): the money moved, so the settlement goes back to its payer, claimable
    // as a chain deposit of another of its sessions.
    await payments(c.env).unclaimDeposit(tx);
    throw new ApiError(
      err.code,
      `${err.message}: the payment settled in ${tx}, which is given back to its payer ${verified.payer}: ` +
        "post {tx_hash, signature} to another of its sessions to credit it there",
      { ...details, claimable: true },
    );
  }
}
