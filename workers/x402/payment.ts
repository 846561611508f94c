import { decodePaymentSignatureHeader, encodePaymentRequiredHeader } from "@x402/core/http";
import { x402ResourceServer } from "@x402/core/server";
import type { PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo } from "@x402/core/types";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import type { Context } from "hono";
import type { Settled } from "../../durable-objects/payments.ts";
import { facilitatorFor } from "../../durable-objects/payments-facilitator.ts";
import { payments } from "../../durable-objects/stubs.ts";
import type { JsonValue } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { type PriceKey, priceOf, type X402Config, x402Config } from "./config.ts";

// One payment, step by step, with @x402/core's resource server (not the Hono middleware, which buffers answers:
// workers/x402/gate.ts streams): the requirements and the 402, reading the payment header (v2 PAYMENT-SIGNATURE or
// v1 X-PAYMENT), a durable hold on the authorization (the Payments object) so it cannot pay for two requests — not
// even two in flight before its settlement lands — verification by the facilitator before any work, settlement after
// the answer, or release when it failed.

export interface Priced {
  cfg: X402Config;
  requirements: PaymentRequirements;
  resource: ResourceInfo;
}

export interface Verified extends Priced {
  payload: PaymentPayload;
  payer: string;
  /** The authorization's key in the Payments object: asset, payer and EIP-3009 nonce. */
  id: string;
}

/** x402's settlement as answers report it (PAYMENT-RESPONSE, receipts, stream chunks). */
export type Settlement = Settled;

let server: { key: string; ready: Promise<x402ResourceServer> } | null = null;

/** The resource server of this configuration: the exact EVM scheme, the facilitator, its supported kinds fetched once. */
function resourceServer(cfg: X402Config, env: Env): Promise<x402ResourceServer> {
  const key = `${cfg.facilitatorUrl ?? ""}|${cfg.chain.rpcUrl}|${cfg.network}`;
  if (server?.key !== key) {
    const rs = new x402ResourceServer(facilitatorFor(target(cfg), env)).register(cfg.network, new ExactEvmScheme());
    const ready = rs.initialize().then(() => rs);
    ready.catch(() => {
      if (server?.ready === ready) server = null; // a facilitator that was down: ask again next time
    });
    server = { key, ready };
  }
  return server.ready;
}

const target = (cfg: X402Config) => ({ chain: cfg.chain, network: cfg.network, facilitatorUrl: cfg.facilitatorUrl });

/** x402's settings, or 404 when x402 is off. */
export function x402Enabled(c: Context<AppEnv>): X402Config {
  let cfg: X402Config | null;
  try {
    cfg = x402Config(c.env);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("configuration_error", err instanceof Error ? err.message : String(err), {
      var: (err as { variable?: string }).variable ?? null,
    });
  }
  if (!cfg) throw new ApiError("not_found", `no route for ${c.req.method} ${c.req.path}: x402 is off (no chain or facilitator configured)`);
  return cfg;
}

/** What one request costs: the route's price for `maxTokens`, as the exact scheme's requirements. */
export function price(c: Context<AppEnv>, cfg: X402Config, key: PriceKey, maxTokens: number, description: string, amount?: bigint): Priced {
  return {
    cfg,
    requirements: {
      scheme: "exact",
      network: cfg.network,
      asset: cfg.asset,
      amount: String(amount ?? priceOf(cfg, key, maxTokens)),
      payTo: cfg.payTo,
      maxTimeoutSeconds: cfg.maxTimeoutSeconds,
      extra: { name: cfg.tokenName, version: cfg.tokenVersion },
    },
    resource: { url: new URL(c.req.url).href, description, mimeType: "application/json" },
  };
}

/**
 * 402 `payment_required`: the requirements in the PAYMENT-REQUIRED header (what x402 clients read) and in the
 * body's `details` (the house error shape), with `reason` saying what was wrong with a payment, if one came.
 */
export async function paymentRequired(c: Context<AppEnv>, p: Priced, reason: string, invalid?: string): Promise<ApiError> {
  const body: PaymentRequired = { x402Version: 2, error: reason, resource: p.resource, accepts: [p.requirements] };
  c.header("PAYMENT-REQUIRED", encodePaymentRequiredHeader(body));
  c.header("Cache-Control", "no-store");
  const details = { ...body, ...(invalid ? { reason: invalid } : {}) } as unknown as JsonValue;
  return new ApiError("payment_required", reason, details);
}

function decodeV1(raw: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(atob(raw.trim()));
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** The request's payment as a v2 payload; null: none; "unreadable": a header that is not a payment. */
export function paymentOf(req: Request, requirements: PaymentRequirements): PaymentPayload | null | "unreadable" {
  const v2 = req.headers.get("payment-signature");
  if (v2) {
    try {
      return decodePaymentSignatureHeader(v2);
    } catch {
      return "unreadable";
    }
  }
  const raw = req.headers.get("x-payment");
  if (!raw) return null;
  const v = decodeV1(raw);
  if (!v || typeof v.payload !== "object" || v.payload === null) return "unreadable";
  // MCP clients may put a v2 payload in X-PAYMENT (payment_proof, _meta["x402/payment"]).
  if (v.x402Version === 2 && typeof v.accepted === "object" && v.accepted !== null) return v as unknown as PaymentPayload;
  // v1: {x402Version: 1, scheme, network, payload}: the exact EVM payload is the same signed EIP-3009 authorization
  // as v2's, so it stands for the requirement it names (network as CAIP-2 or the bare chain id).
  const network = String(v.network ?? "");
  return {
    x402Version: 2,
    accepted: {
      ...requirements,
      scheme: String(v.scheme ?? ""),
      network:
        network === requirements.network || `eip155:${network}` === requirements.network
          ? requirements.network
          : (network as `${string}:${string}`),
    },
    payload: v.payload as Record<string, unknown>,
  };
}

/** Why a payload does not pay these requirements (before asking the facilitator), or null. */
function mismatch(payload: PaymentPayload, req: PaymentRequirements): string | null {
  const a = payload.accepted;
  if (!a || a.scheme !== req.scheme) return "unsupported_scheme";
  if (a.network !== req.network) return "network_mismatch";
  if (String(a.asset).toLowerCase() !== req.asset.toLowerCase()) return "asset_mismatch";
  if (String(a.payTo).toLowerCase() !== req.payTo.toLowerCase()) return "recipient_mismatch";
  if (String(a.amount) !== req.amount) return "amount_mismatch";
  return null;
}

/**
 * Verifies the request's payment for `p` and holds its authorization, or throws 402 (none, unreadable, another
 * asset, amount or network, a bad signature, expired, unfunded, or already used). No work is done before this.
 */
export async function verifyPayment(c: Context<AppEnv>, p: Priced): Promise<Verified> {
  const payload = paymentOf(c.req.raw, p.requirements);
  if (payload === null) throw await paymentRequired(c, p, "payment required: send PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT");
  if (payload === "unreadable")
    throw await paymentRequired(c, p, "the payment header is not a base64 JSON x402 payment", "invalid_payload");
  const wrong = mismatch(payload, p.requirements);
  if (wrong) throw await paymentRequired(c, p, `the payment does not match the requirements (${wrong})`, wrong);
  // The hold first: a replay (settled, or still in flight in another request) is refused without asking the chain.
  const auth = (payload.payload as { authorization?: { from?: string; nonce?: string } }).authorization;
  const from = String(auth?.from ?? "").toLowerCase();
  const id = `${p.requirements.asset.toLowerCase()}:${from}:${String(auth?.nonce ?? "").toLowerCase()}`;
  const store = payments(c.env);
  const held = await store.reserve(id, p.requirements.amount);
  if (!held.ok) {
    const what = held.state === "settled" ? `already settled in ${held.transaction}` : "in use by another request";
    throw await paymentRequired(c, p, `this payment authorization was used before (${what})`, "payment_replayed");
  }
  // The server's requirements, not the client's echo: the facilitator checks the signed authorization against them.
  const verified = await resourceServer(p.cfg, c.env)
    .then((rs) => rs.verifyPayment({ ...payload, accepted: p.requirements }, p.requirements))
    .catch(async (err) => {
      await store.release(id);
      throw err;
    });
  if (!verified.isValid) {
    await store.release(id);
    const why = verified.invalidReason ?? "invalid_payment";
    throw await paymentRequired(
      c,
      p,
      `payment refused by the facilitator: ${why}${verified.invalidMessage ? ` (${verified.invalidMessage.slice(0, 200)})` : ""}`,
      why,
    );
  }
  return { ...p, payload: { ...payload, accepted: p.requirements }, payer: (verified.payer ?? from).toLowerCase(), id };
}

/** Settles a verified payment (serialized in the Payments object); its authorization is released when it fails. */
export function settlePayment(c: Context<AppEnv>, v: Verified): Promise<Settlement> {
  return payments(c.env).settle(v.id, target(v.cfg), v.payload, v.requirements);
}

/** Gives back a verified payment whose request failed: nothing is settled. */
export async function releasePayment(c: Context<AppEnv>, v: Verified): Promise<void> {
  await payments(c.env).release(v.id);
}
