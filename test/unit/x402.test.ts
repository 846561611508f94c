import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { AUTHORIZATION_ROW_TTL_MS } from "../../durable-objects/payments.ts";
import { depositsOf, withDeposit } from "../../durable-objects/session-queue/config.ts";
import { payments } from "../../durable-objects/stubs.ts";
import { receiptTypedData, type UnsignedReceipt, verifyReceipt, ZERO_HASH } from "../../shared/receipt.ts";
import type { SessionConfig } from "../../shared/views.ts";
import app from "../../workers/index.ts";
import { x402PathOf } from "../../workers/lib/rest-call.ts";
import { priceOf, type X402Config, x402Config } from "../../workers/x402/config.ts";
import { paymentOf } from "../../workers/x402/payment.ts";
import { env, ORIGIN, uniq } from "./helpers.ts";

// x402's pure parts and its Durable Object (the chain-facing flow is test/integration/x402.test.ts): configuration
// and prices, reading v1 and v2 payment headers, the durable hold on authorizations, paid receipts, deposits' record.

const TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3" as const;
const CHAIN = { CHAIN_RPC_URL: "http://127.0.0.1:8545", CHAIN_ID: "31337", TOKEN_ADDRESS: TOKEN, STAKING_ADDRESS: TOKEN };
const withVars = (vars: Record<string, string>) => ({ ...env, ...vars }) as unknown as Env;

describe("x402 configuration", () => {
  it("is off without a chain, or without a facilitator, or when disabled; the x402 routes then answer 404", async () => {
    expect(x402Config(env)).toBeNull();
    expect(x402Config(withVars(CHAIN))).toBeNull(); // no FACILITATOR_KEY, no X402_FACILITATOR_URL
    expect(x402Config(withVars({ ...CHAIN, FACILITATOR_KEY: "11".repeat(32), X402_ENABLED: "false" }))).toBeNull();
    const res = await app.request(`${ORIGIN}/api/v1/x402/ping`, {}, env);
    expect(res.status).toBe(404);
    // The gateway without a key is the key check's 401 as before.
    const chat = await app.request(`${ORIGIN}/openai/v1/chat/completions`, { method: "POST", body: "{}" }, env);
    expect(chat.status).toBe(401);
  });

  it("prices a route's base plus max_tokens × the per-token price; pay-to defaults to the router's key", () => {
    const cfg = x402Config(
      withVars({
        ...CHAIN,
        FACILITATOR_KEY: "11".repeat(32),
        X402_PRICE_BASE: "500",
        X402_PRICE_PER_TOKEN: "3",
        X402_ROUTE_PRICES: "ping:7,delegate:900",
      }),
    ) as X402Config;
    expect(cfg.network).toBe("eip155:31337");
    expect(cfg.asset).toBe(TOKEN);
    expect(cfg.payTo).toBe(privateKeyToAccount(env.ROUTER_SIGNING_KEY as `0x${string}`).address);
    expect(priceOf(cfg, "completion", 10)).toBe(530n);
    expect(priceOf(cfg, "delegate", 10)).toBe(930n);
    expect(priceOf(cfg, "ping", 10)).toBe(7n);
    expect(() => x402Config(withVars({ ...CHAIN, FACILITATOR_KEY: "11".repeat(32), X402_PRICE_BASE: "1.5" }))).toThrow(/X402_PRICE_BASE/);
  });
});

describe("payment headers", () => {
  const req = {
    scheme: "exact",
    network: "eip155:31337" as const,
    asset: TOKEN,
    amount: "100",
    payTo: TOKEN,
    maxTimeoutSeconds: 60,
    extra: { name: "Test USD", version: "1" },
  };
  const inner = { signature: "0x00", authorization: { from: TOKEN, nonce: "0x01" } };
  const b64 = (v: unknown) => btoa(JSON.stringify(v));

  it("reads v2 PAYMENT-SIGNATURE, v1 X-PAYMENT and a v2 payload in X-PAYMENT; refuses garbage", () => {
    const v2 = { x402Version: 2, accepted: req, payload: inner };
    expect(paymentOf(new Request(ORIGIN, { headers: { "PAYMENT-SIGNATURE": b64(v2) } }), req)).toEqual(v2);
    expect(paymentOf(new Request(ORIGIN, { headers: { "X-PAYMENT": b64(v2) } }), req)).toEqual(v2);
    const v1 = paymentOf(
      new Request(ORIGIN, { headers: { "X-PAYMENT": b64({ x402Version: 1, scheme: "exact", network: "31337", payload: inner }) } }),
      req,
    );
    expect(v1).toEqual({ x402Version: 2, accepted: req, payload: inner });
    const other = paymentOf(
      new Request(ORIGIN, { headers: { "X-PAYMENT": b64({ x402Version: 1, scheme: "exact", network: "base", payload: inner }) } }),
      req,
    );
    expect((other as { accepted: { network: string } }).accepted.network).toBe("base");
    expect(paymentOf(new Request(ORIGIN, { headers: { "X-PAYMENT": "not base64 json" } }), req)).toBe("unreadable");
    expect(paymentOf(new Request(ORIGIN), req)).toBeNull();
  });

  it("MCP calls with a payment go to the x402 variant of their route, where one exists", () => {
    expect(x402PathOf("/api/v1/completions")).toBe("/api/v1/x402/completions");
    expect(x402PathOf("/api/v1/completions/s1")).toBe("/api/v1/x402/completions/s1");
    expect(x402PathOf("/api/v2/delegate")).toBe("/api/v2/x402/delegate");
    expect(x402PathOf("/api/v1/validate")).toBe("/api/v1/x402/validate");
    expect(x402PathOf("/api/v1/factcheck")).toBe("/api/v1/x402/factcheck");
    expect(x402PathOf("/api/v3/delegate")).toBeUndefined();
    expect(x402PathOf("/api/v1/sessions")).toBeUndefined();
  });
});

describe("Payments: the durable hold", () => {
  it("holds an authorization once; a release gives it back; a deposit tx credits once", async () => {
    const store = payments(env);
    const id = uniq("auth");
    expect(await store.reserve(id, "100")).toEqual({ ok: true });
    expect(await store.reserve(id, "100")).toEqual({ ok: false, state: "reserved", transaction: null });
    await store.release(id);
    expect(await store.reserve(id, "100")).toEqual({ ok: true });
    const tx = uniq("0xtx");
    expect(await store.claimDeposit(tx, "s1", "5", "0xpayer")).toEqual({ ok: true });
    expect(await store.claimDeposit(tx, "s2", "5", "0xpayer")).toMatchObject({
      ok: false,
      reason: "claimed",
      session_id: "s1",
      kind: "chain",
    });
    await store.unclaimDeposit(tx);
    expect((await store.claimDeposit(tx, "s2", "5", "0xpayer")).ok).toBe(true);
  });

  it("drops rows older than any authorization's life (a hold left by a request that died frees its authorization)", async () => {
    const store = payments(env);
    const id = uniq("auth");
    const t0 = Date.now();
    expect(await store.reserve(id, "1", t0)).toEqual({ ok: true });
    expect((await store.reserve(id, "1", t0 + 1000)).ok).toBe(false);
    expect(await store.reserve(uniq("other"), "1", t0 + AUTHORIZATION_ROW_TTL_MS + 1)).toEqual({ ok: true });
    expect(await store.authorization(id)).toBeNull();
  });

  it("a settlement without a reachable facilitator fails and releases the hold", async () => {
    const store = payments(env);
    const id = uniq("auth");
    await store.reserve(id, "1");
    const target = {
      chain: { rpcUrl: "http://127.0.0.1:1", chainId: 31337, token: TOKEN, staking: TOKEN },
      network: "eip155:31337" as const,
      facilitatorUrl: null,
    };
    const res = await store.settle(id, target, { x402Version: 2, accepted: {} as never, payload: {} }, {} as never);
    expect(res.success).toBe(false);
    expect(await store.authorization(id)).toBeNull();
  });
});

describe("paid receipts and deposits", () => {
  it("a receipt with a payment verifies, and any change to the payment breaks it; one without is as before", async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const base: UnsignedReceipt = {
      request_id: "r",
      key_id: "x402",
      kind: "completion",
      model: "m",
      session_id: "s",
      tasks: [],
      consensus: { method: "exact", status: "agreed", agreed: 1, total: 1 },
      output_hash: ZERO_HASH,
      usage: { prompt_tokens: 1, completion_tokens: 2 },
      price: { prompt_per_1m: 0, completion_per_1m: 0 },
      cost: { unit: "micro_usd", prompt: 0, completion: 0, total: 0 },
      block_height: 1,
      issued_at: 1,
      domain: { name: "n", version: "1", chainId: 31337 },
    };
    const paid: UnsignedReceipt = {
      ...base,
      payment: {
        scheme: "exact",
        network: "eip155:31337",
        asset: TOKEN,
        amount: "10800",
        payer: account.address,
        pay_to: TOKEN,
        transaction: `0x${"ab".repeat(32)}`,
      },
    };
    for (const r of [base, paid]) {
      const signed = { ...r, signer: account.address, signature: await account.signTypedData(receiptTypedData(r)) };
      expect(await verifyReceipt(signed, account.address)).toBe(true);
    }
    const signed = { ...paid, signer: account.address, signature: await account.signTypedData(receiptTypedData(paid)) };
    expect(await verifyReceipt({ ...signed, payment: { ...paid.payment, transaction: `0x${"cd".repeat(32)}` } }, account.address)).toBe(
      false,
    );
    const { payment: _, ...stripped } = signed;
    expect(await verifyReceipt(stripped, account.address)).toBe(false);
  });

  it("a session's deposits: the grant, then paid ones, the total added up", () => {
    const config = { deposit: 1000, created_at: 5 } as SessionConfig;
    expect(depositsOf(config)).toEqual([{ source: "granted", tokens: 1000, at: 5 }]);
    const once = withDeposit(config, { source: "chain", tokens: 10, amount: "5", tx_hash: "0x1", at: 6 });
    const twice = withDeposit(once, { source: "x402", tokens: 20, amount: "10", tx_hash: "0x2", at: 7 });
    expect(twice.deposit).toBe(1030);
    expect(depositsOf(twice).map((d) => d.source)).toEqual(["granted", "chain", "x402"]);
  });
});
