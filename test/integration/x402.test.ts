import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { decodePaymentRequiredHeader, decodePaymentResponseHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentPayload, PaymentRequired, PaymentRequirements } from "@x402/core/types";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPaymentFromConfig } from "@x402/fetch";
import { type Address, type Hex, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeClient } from "../../sdk/src/index.ts";
import { testUsdAbi } from "../../shared/chain.ts";
import { verifyReceipt } from "../../shared/receipt.ts";
import { depositTypedData, type SigningDomain } from "../../shared/signing.ts";
import { chainClients, type LocalChain, startChain, TRANSFER_WITH_AUTHORIZATION_TYPES, tokenBalance } from "../helpers/chain.ts";
import { api, type Miner, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// x402 through the real router (wrangler dev), a real miner and a real local chain (ganache, TestUSD with
// EIP-3009): the unmodified @x402/fetch client pays and gets its answer, balances move by the price on chain, and
// replayed, underpaid, wrong-asset, expired and v1 payments, failed requests and paid deposits behave as specified.

const VARS = { X402_PRICE_BASE: "10000", X402_PRICE_PER_TOKEN: "100", X402_ROUTE_PRICES: "ping:1000", DEPOSIT_TOKENS_PER_TUSD: "2000000" };
const NETWORK = "eip155:31337" as const;
let chain: LocalChain;
let router: Router;
let miner: Miner;
let payTo: Address;
let receiptSigner: string;
let domain: SigningDomain;

const payer = () => privateKeyToAccount(chain.accounts[0].privateKey);
const balances = async () => ({ payer: await tokenBalance(chain, payer().address), payTo: await tokenBalance(chain, payTo) });

/** The unmodified x402 fetch client for `key`, allowing the chain's tUSD; `sent` records the payment headers it sends. */
function paidFetch(key: Hex, sent: string[] = []) {
  const recording: typeof fetch = async (input, init) => {
    const req = new Request(input as RequestInfo, init);
    const sig = req.headers.get("payment-signature");
    if (sig) sent.push(sig);
    return fetch(req);
  };
  return wrapFetchWithPaymentFromConfig(recording, {
    schemes: [{ network: NETWORK, client: new ExactEvmScheme(privateKeyToAccount(key)) }],
    spendControls: { allowedAssets: [{ network: NETWORK, asset: chain.token }] },
  });
}

const post = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

/** The 402's requirements for a path (no payment sent). */
async function requirementsOf(path: string, init?: RequestInit): Promise<PaymentRequired> {
  const res = await fetch(`${router.url}${path}`, init);
  expect(res.status).toBe(402);
  return decodePaymentRequiredHeader(res.headers.get("payment-required")!);
}

/** A hand-signed EIP-3009 authorization for `req` (overrides: value, validBefore, asset). */
async function signed(req: PaymentRequirements, o: { value?: bigint; validBefore?: bigint; asset?: Address; to?: Address } = {}) {
  const account = payer();
  const authorization = {
    from: account.address,
    to: o.to ?? (req.payTo as Address),
    value: String(o.value ?? BigInt(req.amount)),
    validAfter: "0",
    validBefore: String(o.validBefore ?? BigInt(Math.floor(Date.now() / 1000) + 600)),
    nonce: toHex(crypto.getRandomValues(new Uint8Array(32))),
  };
  const signature = await account.signTypedData({
    domain: { name: "Test USD", version: "1", chainId: 31337, verifyingContract: o.asset ?? (req.asset as Address) },
    types: TRANSFER_WITH_AUTHORIZATION_TYPES,
    primaryType: "TransferWithAuthorization",
    message: {
      ...authorization,
      value: BigInt(authorization.value),
      validAfter: 0n,
      validBefore: BigInt(authorization.validBefore),
      nonce: authorization.nonce as Hex,
    },
  });
  return { signature, authorization };
}

const v2Header = (accepted: PaymentRequirements, payload: object) =>
  encodePaymentSignatureHeader({ x402Version: 2, accepted, payload } as PaymentPayload);

beforeAll(async () => {
  chain = await startChain();
  router = await startRouter({ chain, vars: VARS });
  miner = await startMiner(router.url, { name: "x402" });
  await miner.waitFor("ready", undefined, 180_000);
  const info = await api(router, "/api/v1/info");
  receiptSigner = info.body.receipt_signer;
  domain = info.body.receipt_domain;
  const req = await requirementsOf("/api/v1/x402/ping");
  payTo = req.accepts[0].payTo as Address;
}, 240_000);

afterAll(async () => {
  await miner?.stop();
  await router?.stop();
  await chain?.stop();
});

describe("x402 payments", () => {
  it("a request without payment is 402 with the requirements in PAYMENT-REQUIRED and the house error body", async () => {
    const res = await fetch(`${router.url}/api/v1/x402/completions`, post({ prompt: "Hi", max_tokens: 8 }));
    expect(res.status).toBe(402);
    const required = decodePaymentRequiredHeader(res.headers.get("payment-required")!);
    expect(required.x402Version).toBe(2);
    expect(required.accepts[0]).toMatchObject({
      scheme: "exact",
      network: NETWORK,
      asset: chain.token,
      amount: String(10000 + 8 * 100),
      extra: { name: "Test USD", version: "1" },
    });
    const body = await res.json();
    expect(body.error.code).toBe("payment_required");
    expect(body.error.details.accepts[0].amount).toBe("10800");
    expect(body.request_id).toBeTruthy();
    // An invalid body is refused before any payment question.
    expect((await fetch(`${router.url}/api/v1/x402/completions`, post({ prompt: 5 }))).status).toBe(400);
  });

  it("the unmodified @x402/fetch client pays for a completion; balances move by the price; the receipt carries the tx", async () => {
    const before = await balances();
    const res = await paidFetch(chain.accounts[0].privateKey)(
      `${router.url}/api/v1/x402/completions`,
      post({ prompt: "The capital of France is", max_tokens: 8, temperature: 0 }),
    );
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(typeof body.choices[0].text).toBe("string");
    const settlement = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    expect(settlement.success).toBe(true);
    expect(settlement.transaction).toMatch(/^0x[0-9a-f]{64}$/);
    expect(body.receipt.payment).toMatchObject({ transaction: settlement.transaction.toLowerCase(), amount: "10800", network: NETWORK });
    expect(await verifyReceipt(body.receipt, receiptSigner)).toBe(true);
    expect(await verifyReceipt({ ...body.receipt, payment: { ...body.receipt.payment, amount: "1" } }, receiptSigner)).toBe(false);
    const after = await balances();
    expect(before.payer - after.payer).toBe(10800n);
    expect(after.payTo - before.payTo).toBe(10800n);
    const tx = await chainClients(chain, chain.deployer.privateKey).public.getTransactionReceipt({ hash: settlement.transaction as Hex });
    expect(tx.status).toBe("success");
  }, 120_000);

  it("a replayed payment is refused with 402 and moves nothing, even while the first is in flight", async () => {
    // The same authorization twice at once: both would pass the facilitator (nothing is on chain yet); one is held.
    const required = await requirementsOf("/api/v1/x402/ping");
    const header = v2Header(required.accepts[0], await signed(required.accepts[0]));
    const start = await balances();
    const twice = await Promise.all(
      [0, 1].map(() => fetch(`${router.url}/api/v1/x402/ping`, { headers: { "PAYMENT-SIGNATURE": header } })),
    );
    expect(twice.map((r) => r.status).sort()).toEqual([200, 402]);
    // Refused by the durable hold before any work (not by a failed settlement after doing the work for free).
    const loser = await twice.find((r) => r.status === 402)!.json();
    expect(loser.error.details.reason).toBe("payment_replayed");
    expect(start.payer - (await balances()).payer).toBe(1000n);

    const sent: string[] = [];
    const res = await paidFetch(chain.accounts[0].privateKey, sent)(`${router.url}/api/v1/x402/ping`);
    expect(res.status).toBe(200);
    expect(sent).toHaveLength(1);
    const before = await balances();
    const again = await fetch(`${router.url}/api/v1/x402/ping`, { headers: { "PAYMENT-SIGNATURE": sent[0] } });
    expect(again.status).toBe(402);
    const body = await again.json();
    expect(body.error.code).toBe("payment_required");
    expect(body.error.details.reason).toBe("payment_replayed");
    expect(await balances()).toEqual(before);
  }, 60_000);

  it("an underpayment, a wrong asset and an expired authorisation are refused with 402 and move nothing", async () => {
    const required = await requirementsOf("/api/v1/x402/ping");
    const req = required.accepts[0];
    const before = await balances();
    const refused = async (header: Record<string, string>) => {
      const res = await fetch(`${router.url}/api/v1/x402/ping`, { headers: header });
      const body = await res.json();
      expect(res.status, JSON.stringify(body)).toBe(402);
      return body.error.details.reason as string;
    };
    // Underpaid: the echo says less, or the echo is right but the signed value is less.
    const low = await signed(req, { value: 999n });
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header({ ...req, amount: "999" }, low) })).toBe("amount_mismatch");
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header(req, low) })).toMatch(/value|amount/i);
    // Another asset: signed for another token (the staking contract's address stands in for one).
    const other = await signed(req, { asset: chain.staking });
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header({ ...req, asset: chain.staking }, other) })).toBe("asset_mismatch");
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header(req, other) })).toMatch(/signature/i);
    // Expired.
    const expired = await signed(req, { validBefore: BigInt(Math.floor(Date.now() / 1000) - 60) });
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header(req, expired) })).toMatch(/expired|valid_before|validBefore/i);
    // Paid to someone else.
    const elsewhere = await signed(req, { to: chain.accounts[1].address });
    expect(await refused({ "PAYMENT-SIGNATURE": v2Header(req, elsewhere) })).toMatch(/recipient/i);
    expect(await balances()).toEqual(before);
  }, 60_000);

  it("a failed request settles nothing, and its payment may pay for the retry", async () => {
    const path = "/api/v1/x402/completions/no-such-session";
    const required = await requirementsOf(path, post({ prompt: "Hi", max_tokens: 4 }));
    const header = v2Header(required.accepts[0], await signed(required.accepts[0]));
    const before = await balances();
    // An invalid body with a payment: 400 before the payment is looked at.
    const invalid = await fetch(
      `${router.url}/api/v1/x402/completions`,
      post({ prompt: "Hi", max_tokens: -1 }, { "PAYMENT-SIGNATURE": header }),
    );
    expect(invalid.status).toBe(400);
    // A request that fails after verification (its session does not exist): nothing settled.
    const failed = await fetch(`${router.url}${path}`, post({ prompt: "Hi", max_tokens: 4 }, { "PAYMENT-SIGNATURE": header }));
    expect(failed.status).toBe(404);
    expect(failed.headers.get("payment-response")).toBeNull();
    expect(await balances()).toEqual(before);
    // The authorization was released: the same payment pays for the same request on the default session.
    const ok = await fetch(`${router.url}/api/v1/x402/completions`, post({ prompt: "Hi", max_tokens: 4 }, { "PAYMENT-SIGNATURE": header }));
    expect(ok.status, await ok.clone().text()).toBe(200);
    expect(before.payer - (await balances()).payer).toBe(10400n);
  }, 120_000);

  it("accepts a v1 X-PAYMENT header", async () => {
    const required = await requirementsOf("/api/v1/x402/ping");
    const payload = await signed(required.accepts[0]);
    const v1 = btoa(JSON.stringify({ x402Version: 1, scheme: "exact", network: NETWORK, payload }));
    const before = await balances();
    const res = await fetch(`${router.url}/api/v1/x402/ping`, { headers: { "X-PAYMENT": v1 } });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(decodePaymentResponseHeader(res.headers.get("payment-response")!).success).toBe(true);
    expect(before.payer - (await balances()).payer).toBe(1000n);
  }, 60_000);

  it("a paid stream still streams, and settles with its final chunk", async () => {
    const before = await balances();
    const res = await paidFetch(chain.accounts[0].privateKey)(
      `${router.url}/api/v1/x402/completions`,
      post({ prompt: "Once upon a time", max_tokens: 6, stream: true }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const reads: string[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      reads.push(value);
    }
    const events = reads
      .join("")
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trim());
    expect(events.at(-1)).toBe("[DONE]");
    const final = JSON.parse(events.at(-2)!);
    expect(final.x402.success).toBe(true);
    expect(final.receipt.payment.transaction).toBe(final.x402.transaction.toLowerCase());
    expect(await verifyReceipt(final.receipt, receiptSigner)).toBe(true);
    expect(events.length).toBeGreaterThan(2); // token chunks came before the final one
    expect(before.payer - (await balances()).payer).toBe(10600n);
  }, 120_000);

  it("a client that hangs up after the first tokens of a paid stream still pays", async () => {
    const before = await balances();
    const ctl = new AbortController();
    const res = await paidFetch(chain.accounts[0].privateKey)(`${router.url}/api/v1/x402/completions`, {
      ...post({ prompt: "Once upon a time", max_tokens: 24, stream: true }),
      signal: ctl.signal,
    });
    expect(res.status).toBe(200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("data:")) text += (await reader.read()).value ?? "";
    ctl.abort(); // text reached the client: reading it and dropping the connection is not free
    await until(async () => before.payer - (await balances()).payer === 12400n, 30_000);
  }, 120_000);

  it("the gateway's OpenAI routes take x402 without a key; concurrent settlements do not race", async () => {
    const chat = { model: "tiny-gpt2", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 };
    const unpaid = await fetch(`${router.url}/openai/v1/chat/completions`, post(chat));
    expect(unpaid.status).toBe(402);
    expect(unpaid.headers.get("payment-required")).toBeTruthy();
    const before = await balances();
    const res = await paidFetch(chain.accounts[0].privateKey)(`${router.url}/openai/v1/chat/completions`, post(chat));
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.object).toBe("chat.completion");
    expect(body.receipt.payment.amount).toBe("10400");
    // With a key, the gateway is as before (no payment).
    expect((await api(router, "/openai/v1/chat/completions", { body: chat })).status).toBe(200);
    // Three payers at once: three settlements from the facilitator's one account.
    const pings = await Promise.all([1, 2, 3].map((i) => paidFetch(chain.accounts[i].privateKey)(`${router.url}/api/v1/x402/ping`)));
    expect(pings.map((r) => r.status)).toEqual([200, 200, 200]);
    const txs = pings.map((r) => decodePaymentResponseHeader(r.headers.get("payment-response")!).transaction);
    expect(new Set(txs).size).toBe(3);
    expect((await balances()).payTo - before.payTo).toBe(10400n + 3000n);
  }, 120_000);
});

describe("paid MCP tools", () => {
  it('a tool paid through _meta["x402/payment"] or payment_proof runs its x402 route and reports the settlement', async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${router.url}/mcp`), {
      requestInit: { headers: { authorization: "Bearer dev-key" } },
    });
    const client = new Client({ name: "x402-it", version: "1.0.0" });
    await client.connect(transport);
    try {
      const args = { task_request_input: "Say hi", max_tokens: 4 };
      const required = await requirementsOf("/api/v1/x402/delegate", post(args));
      const req = required.accepts[0];
      expect(req.amount).toBe("10400");
      const before = await balances();
      const payload: PaymentPayload = { x402Version: 2, accepted: req, payload: await signed(req) };
      const viaMeta = await client.callTool({ name: "cortensor_delegate", arguments: args, _meta: { "x402/payment": payload } });
      expect(viaMeta.isError, JSON.stringify(viaMeta)).toBeFalsy();
      expect(viaMeta._meta?.["x402/payment-response"]).toMatchObject({ success: true });
      expect(before.payer - (await balances()).payer).toBe(10400n);

      // payment_proof (base64 JSON, as X-PAYMENT carries it) on the streamed completion tool.
      const creq = (await requirementsOf("/api/v1/x402/completions", post({ prompt: "Hi", max_tokens: 4 }))).accepts[0];
      const proof = btoa(JSON.stringify({ x402Version: 2, accepted: creq, payload: await signed(creq) }));
      const viaProof = await client.callTool({
        name: "cortensor_completions",
        arguments: { prompt: "Hi", max_tokens: 4, payment_proof: proof },
      });
      expect(viaProof.isError, JSON.stringify(viaProof)).toBeFalsy();
      const out = viaProof.structuredContent as { x402: { success: boolean }; receipt: { payment: { amount: string } } };
      expect(out.x402.success).toBe(true);
      expect(out.receipt.payment.amount).toBe("10400");
      // Replayed through MCP: refused, the tool result is the 402 with the requirements.
      const replay = await client.callTool({ name: "cortensor_delegate", arguments: args, _meta: { "x402/payment": payload } });
      expect(replay.isError).toBe(true);
      expect((replay.structuredContent as { http_status: number }).http_status).toBe(402);
      expect(before.payer - (await balances()).payer).toBe(20800n);
    } finally {
      await client.close();
    }
  }, 120_000);
});

describe("paid session deposits", () => {
  /** `key`'s signature of Deposit {session, tx} under the router's published receipt_domain. */
  const signDeposit = (key: Hex, session: string, tx: Hex) =>
    privateKeyToAccount(key).signTypedData(depositTypedData({ session, tx }, domain));
  const newSession = async (name: string) => {
    const created = await api(router, "/api/v1/sessions", { body: { name, deposit: 1000 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body.id ?? created.body.config.id;
  };
  const deposit = (sid: string, body: object) => api(router, `/api/v1/sessions/${sid}/deposits`, { body });

  it("a deposit paid on chain is credited once to its payer's signed session; one paid with x402 too; the session shows their sources", async () => {
    const [sid, other] = [await newSession("paid"), await newSession("other")];
    const alice = chain.accounts[4].privateKey;
    const { wallet, public: pub } = chainClients(chain, alice);
    const hash = await wallet.writeContract({ address: chain.token, abi: testUsdAbi, functionName: "transfer", args: [payTo, 5000n] });
    await pub.waitForTransactionReceipt({ hash });
    // Anyone who saw the hash: unsigned, signed by another account, or Alice's signature for another session.
    const bare = await deposit(other, { tx_hash: hash });
    expect(bare.status).toBe(400);
    expect(bare.body.error.details).toEqual([{ path: "signature", message: "missing" }]);
    const thief = await deposit(other, { tx_hash: hash, signature: await signDeposit(chain.accounts[5].privateKey, other, hash) });
    expect(thief.status, JSON.stringify(thief.body)).toBe(400);
    expect(thief.body.error.details[0].path).toBe("signature");
    expect((await deposit(other, { tx_hash: hash, signature: await signDeposit(alice, sid, hash) })).status).toBe(400);

    const first = await deposit(sid, { tx_hash: hash, signature: await signDeposit(alice, sid, hash) });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(first.body.deposit).toMatchObject({
      source: "chain",
      tokens: 10_000,
      amount: "5000",
      tx_hash: hash.toLowerCase(),
      payer: chain.accounts[4].address.toLowerCase(),
    });
    expect(first.body.total).toBe(11_000);
    expect((await deposit(sid, { tx_hash: hash, signature: await signDeposit(alice, sid, hash) })).status).toBe(409);
    // A transaction that paid someone else credits nothing.
    const elsewhere = await wallet.writeContract({
      address: chain.token,
      abi: testUsdAbi,
      functionName: "transfer",
      args: [chain.accounts[5].address, 5000n],
    });
    await pub.waitForTransactionReceipt({ hash: elsewhere });
    expect((await deposit(sid, { tx_hash: elsewhere, signature: await signDeposit(alice, sid, elsewhere) })).status).toBe(400);

    // x402: 402 with the amount asked, then paid by the x402 client (with the API key: the session is the owner's).
    const unpaid = await deposit(sid, { amount: "2500" });
    expect(unpaid.status).toBe(402);
    const res = await paidFetch(alice)(
      `${router.url}/api/v1/sessions/${sid}/deposits`,
      post({ amount: "2500" }, { authorization: "Bearer dev-key" }),
    );
    const paid = await res.json();
    expect(res.status, JSON.stringify(paid)).toBe(201);
    expect(paid.deposit).toMatchObject({ source: "x402", tokens: 5000, amount: "2500" });
    expect(paid.deposit.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    // Its settlement's hash, posted again as a chain deposit by its payer: the money was credited already.
    const twice = await deposit(sid, { tx_hash: paid.deposit.tx_hash, signature: await signDeposit(alice, sid, paid.deposit.tx_hash) });
    expect(twice.status, JSON.stringify(twice.body)).toBe(409);

    const view = await api(router, `/api/v1/sessions/${sid}`);
    expect(view.body.config.deposit).toBe(16_000);
    expect(view.body.usage.deposit).toBe(16_000);
    expect(view.body.deposits.map((d: { source: string }) => d.source)).toEqual(["granted", "chain", "x402"]);
  }, 120_000);

  it("an x402 per-request payment's settlement posted as a chain deposit by its payer is 409 and credits nothing", async () => {
    const sid = await newSession("per-request");
    const alice = chain.accounts[4].privateKey;
    const ping = await paidFetch(alice)(`${router.url}/api/v1/x402/ping`);
    expect(ping.status).toBe(200);
    const tx = decodePaymentResponseHeader(ping.headers.get("payment-response")!).transaction.toLowerCase() as Hex;
    // Signed through the SDK's helper (the router's published domain).
    const sdk = new EdgeClient({ baseUrl: router.url, apiKey: "dev-key" });
    const signature = await privateKeyToAccount(alice).signTypedData(await sdk.sessions.depositTypedData(sid, tx));
    expect(signature).toBe(await signDeposit(alice, sid, tx));
    const again = await deposit(sid, { tx_hash: tx, signature });
    expect(again.status, JSON.stringify(again.body)).toBe(409);
    expect(again.body.error.details.kind).toBe("x402");
    expect((await api(router, `/api/v1/sessions/${sid}`)).body.config.deposit).toBe(1000);
  }, 60_000);
});
