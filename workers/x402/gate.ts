import { encodePaymentResponseHeader } from "@x402/core/http";
import type { Context, MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import { Receipt, type ReceiptPayment } from "../../shared/receipt.ts";
import type { AppEnv } from "../env.ts";
import { withPaymentReceipt } from "../lib/receipts.ts";
import { type PriceKey, X402_OWNER } from "./config.ts";
import {
  type Priced,
  paymentRequired,
  price,
  releasePayment,
  type Settlement,
  settlePayment,
  type Verified,
  verifyPayment,
  x402Enabled,
} from "./payment.ts";

// The x402 flow around a route's work, for the x402 routes (routes/x402.ts) and the gateway without a key:
// price → 402 or verify and hold the authorization → the work → settle only after a successful answer.
//
// Why not @x402/hono's paymentMiddleware: it buffers the whole answer before settling, so a paid stream would
// arrive at once. Here a JSON answer is settled before it is sent (PAYMENT-RESPONSE header, the receipt re-signed
// with the payment); a stream is passed through as it comes, and settled when its final chunk (the one with the
// receipt) or its end arrives without an error — that chunk then carries the re-signed receipt and `x402` (the
// settlement). An answer ≥ 400, or a stream that ends in an error chunk, settles nothing and releases the payment.
// A client that hangs up after text reached it still pays: otherwise reading the tokens and dropping the
// connection before the final chunk would be free inference.

export interface GateOptions {
  key: PriceKey | ((c: Context<AppEnv>) => PriceKey);
  /** The max_tokens the request is priced for, from its JSON body (null for a GET or an unreadable body). */
  tokens: (body: Record<string, unknown> | null, c: Context<AppEnv>) => number;
  description: string;
}

/** Keeps `p` running after the response (no execution context when a test calls the app directly). */
function background(c: Context<AppEnv>, p: Promise<unknown>): void {
  const logged = p.catch((err) => console.error(`request ${c.get("requestId")}: settlement after a hang-up failed`, err));
  try {
    c.executionCtx.waitUntil(logged);
  } catch {}
}

/** What a settlement reports to the receipt. */
function receiptPayment(v: Verified, s: Settlement): ReceiptPayment {
  return {
    scheme: v.requirements.scheme,
    network: v.requirements.network,
    asset: v.requirements.asset as `0x${string}`,
    amount: s.amount ?? v.requirements.amount,
    payer: (s.payer ?? v.payer) as `0x${string}`,
    pay_to: v.requirements.payTo as `0x${string}`,
    transaction: s.transaction.toLowerCase() as `0x${string}`,
  };
}

/** The answer's receipt with the payment in it, when the body has a receipt. */
async function paidReceipt(c: Context<AppEnv>, body: Record<string, unknown>, v: Verified, s: Settlement) {
  const parsed = Receipt.safeParse(body.receipt);
  return parsed.success ? { receipt: await withPaymentReceipt(c, parsed.data, receiptPayment(v, s)) } : {};
}

/** The settlement as answers carry it beside the receipt. */
const settlementView = (s: Settlement) => ({ success: s.success, transaction: s.transaction, network: s.network, payer: s.payer ?? null });

/** Prices the request of `c` (the JSON body read once; Hono caches it for the handler). */
export async function priceRequest(c: Context<AppEnv>, opts: GateOptions): Promise<Priced> {
  const cfg = x402Enabled(c);
  const body = c.req.method === "GET" ? null : ((await c.req.json().catch(() => null)) as Record<string, unknown> | null);
  const key = typeof opts.key === "function" ? opts.key(c) : opts.key;
  return price(c, cfg, key, opts.tokens(body && typeof body === "object" ? body : null, c), opts.description);
}

export function x402Gate(opts: GateOptions): MiddlewareHandler<AppEnv> {
  return createMiddleware<AppEnv>(async (c, next) => {
    const verified = await verifyPayment(c, await priceRequest(c, opts));
    c.set("x402Payer", verified.payer);
    c.set("owner", X402_OWNER);
    await next();
    const res = c.res;
    if (res.status >= 400) {
      await releasePayment(c, verified);
      return;
    }
    if (res.headers.get("content-type")?.startsWith("text/event-stream") && res.body) {
      c.res = new Response(settledStream(c, res.body, verified), { status: res.status, headers: res.headers });
      return;
    }
    const text = await res.text();
    const settlement = await settlePayment(c, verified);
    // Not paid: the answer is dropped for a 402 (the authorization was released by the Payments object).
    if (!settlement.success)
      throw await paymentRequired(c, verified, `settlement failed: ${settlement.errorReason ?? "unknown"}`, settlement.errorReason);
    let out = text;
    const body = (() => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return null;
      }
    })();
    if (body && typeof body === "object" && !Array.isArray(body)) {
      const b = body as Record<string, unknown>;
      out = JSON.stringify({ ...b, ...(await paidReceipt(c, b, verified, settlement)), x402: settlementView(settlement) });
    }
    const headers = new Headers(res.headers);
    headers.set("PAYMENT-RESPONSE", encodePaymentResponseHeader(settlement));
    headers.delete("content-length");
    c.res = new Response(out, { status: res.status, headers });
  });
}

/**
 * The SSE body passed through frame by frame. The frame with the receipt (or, without one, `[DONE]` or the end)
 * settles first if no error frame came; an error frame releases the payment. A failed settlement is reported in an
 * error frame (house shape) in place of the paid frame.
 */
function settledStream(c: Context<AppEnv>, body: ReadableStream<Uint8Array>, v: Verified): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let buffered = "";
  let done = false; // settled or released
  let delivered = false; // a frame of the answer (not an error) went to the client
  const release = async () => {
    if (done) return;
    done = true;
    await releasePayment(c, v);
  };
  const settle = async (frame: Record<string, unknown> | null): Promise<string> => {
    done = true;
    const s = await settlePayment(c, v);
    if (!s.success) {
      const err = {
        request_id: c.get("requestId") ?? null,
        error: { code: "payment_required", message: `settlement failed: ${s.errorReason ?? "unknown"}`, details: null },
      };
      return `data: ${JSON.stringify(err)}\n\n`;
    }
    if (!frame) return `data: ${JSON.stringify({ x402: settlementView(s) })}\n\n`;
    return `data: ${JSON.stringify({ ...frame, ...(await paidReceipt(c, frame, v, s)), x402: settlementView(s) })}\n\n`;
  };
  const onFrame = async (frame: string): Promise<string> => {
    const data = frame
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trimStart())
      .join("\n");
    if (done || !data) return `${frame}\n\n`;
    if (data === "[DONE]") return `${await settle(null)}${frame}\n\n`;
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(data);
    } catch {
      return `${frame}\n\n`;
    }
    if (json && typeof json === "object" && "error" in json && json.error) {
      await release();
      return `${frame}\n\n`;
    }
    if (json && typeof json === "object" && "receipt" in json) return settle(json);
    delivered = true;
    return `${frame}\n\n`;
  };
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const { done: ended, value } = await reader.read();
      if (ended) {
        if (buffered.trim()) ctrl.enqueue(enc.encode(await onFrame(buffered.replace(/\n+$/, ""))));
        // Ended without a final chunk: the answer was not delivered, so nothing is settled.
        await release();
        ctrl.close();
        return;
      }
      buffered += value;
      let out = "";
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        out += await onFrame(frame);
      }
      if (out) ctrl.enqueue(enc.encode(out));
    },
    async cancel(reason) {
      if (delivered && !done) {
        // The client had part of the answer: settle it in the background (nobody is left to read the result).
        done = true;
        background(c, settlePayment(c, v));
      } else await release();
      await reader.cancel(reason);
    },
  });
}
