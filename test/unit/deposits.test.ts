import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentRequirements } from "@x402/core/types";
import { type Address, encodeAbiParameters, encodeEventTopics, type Hex, toHex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { deploymentDomain } from "../../durable-objects/deployment.ts";
import { Payments, SETTLEMENT_ROW_TTL_MS } from "../../durable-objects/payments.ts";
import { payments } from "../../durable-objects/stubs.ts";
import { testUsdAbi } from "../../shared/chain.ts";
import { depositTypedData } from "../../shared/signing.ts";
import app from "../../workers/index.ts";
import { env, ORIGIN, uniq } from "./helpers.ts";

// Paid deposits against a fake facilitator and a fake chain (fetch answered in-process; the real ones are
// test/integration/x402.test.ts): a chain deposit is its signer's alone, every x402 settlement is claimed so its hash
// credits nothing again, and an x402 deposit whose session vanished gives its settlement back to its payer.

const TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3" as const;
const FACILITATOR = "https://facilitator.test";
const RPC = "http://chain.test";
const vars = {
  ...env,
  CHAIN_RPC_URL: RPC,
  CHAIN_ID: "31337",
  TOKEN_ADDRESS: TOKEN,
  STAKING_ADDRESS: TOKEN,
  X402_FACILITATOR_URL: FACILITATOR,
  DEPOSIT_TOKENS_PER_TUSD: "2000000",
} as unknown as Env;
const target = {
  chain: { rpcUrl: RPC, chainId: 31337, token: TOKEN, staking: TOKEN },
  network: "eip155:31337" as const,
  facilitatorUrl: FACILITATOR,
};
const relayer = privateKeyToAccount(generatePrivateKey()).address; // the facilitator's account: it sends settlements
const txHash = () => toHex(crypto.getRandomValues(new Uint8Array(32)));

/** What the fake chain holds: receipts by hash. */
const receipts = new Map<string, object>();

/** A mined receipt of `from` sending a tUSD Transfer of `value` from `payer` to `to`. */
function mine(hash: Hex, payer: Address, to: Address, value: bigint, from: Address = payer): void {
  const topics = encodeEventTopics({ abi: testUsdAbi, eventName: "Transfer", args: { from: payer, to } });
  const common = { blockHash: `0x${"11".repeat(32)}`, blockNumber: "0x1", transactionHash: hash, transactionIndex: "0x0" };
  const log = {
    ...common,
    address: TOKEN,
    topics,
    data: encodeAbiParameters([{ type: "uint256" }], [value]),
    logIndex: "0x0",
    removed: false,
  };
  receipts.set(hash, {
    ...common,
    from,
    to: TOKEN,
    status: "0x1",
    logs: [log],
    gasUsed: "0x1",
    cumulativeGasUsed: "0x1",
    effectiveGasPrice: "0x1",
    contractAddress: null,
    logsBloom: `0x${"00".repeat(256)}`,
    type: "0x2",
  });
}

/** The fake facilitator's next settlement: its transaction is mined as the relayer's transferWithAuthorization. */
let settleAs: { tx: Hex; payer: Address; to: Address; amount: bigint } | null = null;

async function fakeFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const req = new Request(input, init);
  const json = (v: unknown) => new Response(JSON.stringify(v), { headers: { "content-type": "application/json" } });
  const url = new URL(req.url);
  if (url.origin === FACILITATOR) {
    if (url.pathname === "/supported") return json({ kinds: [{ x402Version: 2, scheme: "exact", network: "eip155:31337" }] });
    const body = (await req.json()) as { paymentPayload: { payload: { authorization: { from: string } } } };
    const payer = body.paymentPayload.payload.authorization.from;
    if (url.pathname === "/verify") return json({ isValid: true, payer });
    const s = settleAs!;
    mine(s.tx, s.payer, s.to, s.amount, relayer);
    return json({ success: true, transaction: s.tx, network: "eip155:31337", payer });
  }
  if (url.origin === RPC) {
    const call = (await req.json()) as { id: number; method: string; params: string[] };
    const result = call.method === "eth_getTransactionReceipt" ? (receipts.get(call.params[0]) ?? null) : null;
    return json({ jsonrpc: "2.0", id: call.id, result });
  }
  throw new Error(`unexpected fetch ${req.url}`);
}

beforeEach(() => {
  vi.spyOn(globalThis, "fetch").mockImplementation(fakeFetch);
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** `env` whose SessionQueues answer addDeposit with `addDeposit` (null: the session vanished after the check). */
const crediting = (addDeposit: () => Promise<null>) =>
  ({
    ...vars,
    SESSION_QUEUE: {
      idFromName: (name: string) => env.SESSION_QUEUE.idFromName(name),
      get: (id: DurableObjectId) => {
        const real = env.SESSION_QUEUE.get(id);
        return { access: (...a: Parameters<typeof real.access>) => real.access(...a), addDeposit };
      },
    },
  }) as unknown as Env;
const vanishing = crediting(async () => null);

async function call(e: Env, path: string, body: unknown, headers: Record<string, string> = {}) {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}/api/v1${path}`, {
      method: "POST",
      headers: { authorization: "Bearer dev-key", "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    }),
    e,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return { res, body: (await res.json()) as any };
}

async function session(): Promise<string> {
  const { res, body } = await call(vars, "/sessions", { name: uniq("paid"), deposit: 10 });
  expect(res.status, JSON.stringify(body)).toBe(201);
  return body.id ?? body.config.id;
}

const signDeposit = (key: Hex, sid: string, tx: Hex) =>
  privateKeyToAccount(key).signTypedData(depositTypedData({ session: sid, tx }, deploymentDomain(vars)));

/** An x402 payment header paying `req` from `from` (the fake facilitator takes any signature). */
function payment(req: PaymentRequirements, from: Address): string {
  const authorization = { from, to: req.payTo, value: req.amount, validAfter: "0", validBefore: "9999999999", nonce: txHash() };
  return encodePaymentSignatureHeader({ x402Version: 2, accepted: req, payload: { signature: `0x${"00".repeat(65)}`, authorization } });
}

/** A fresh payer's 1000-unit payment reserved and settled through the fake facilitator: its authorization id and tx. */
async function settledPayment(store: ReturnType<typeof payments>): Promise<{ payer: Address; id: string; tx: Hex }> {
  const payer = privateKeyToAccount(generatePrivateKey()).address.toLowerCase() as Address;
  const id = `${TOKEN.toLowerCase()}:${payer}:${uniq("nonce")}`;
  const tx = txHash();
  settleAs = { tx, payer, to: TOKEN, amount: 1000n };
  await store.reserve(id, "1000");
  const res = await store.settle(id, target, { x402Version: 2, accepted: {} as never, payload: { authorization: { from: payer } } }, {
    amount: "1000",
    network: "eip155:31337",
  } as never);
  expect(res.success, JSON.stringify(res)).toBe(true);
  return { payer, id, tx };
}

describe("Payments: deposits and settlements", () => {
  it("adds its deposit columns to a table of the first version, keeping its rows (read as chain deposits)", async () => {
    const stub = env.PAYMENTS.get(env.PAYMENTS.idFromName(uniq("payments")));
    const row = await runInDurableObject(stub, (_: Payments, state) => {
      state.storage.sql.exec("DROP TABLE deposits");
      state.storage.sql.exec(
        "CREATE TABLE deposits (tx TEXT PRIMARY KEY, session_id TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL)",
      );
      state.storage.sql.exec("INSERT INTO deposits VALUES ('0xold', 's-old', '5', 1)");
      return new Payments(state, env).deposit("0xold");
    });
    expect(row).toEqual({ tx: "0xold", session_id: "s-old", amount: "5", at: 1, kind: "chain", payer: null, claimable: 0 });
  });

  it("a successful settlement claims its transaction for good; a chain claim of it, even by its payer, is refused", async () => {
    const store = payments(vars);
    const { payer, id, tx } = await settledPayment(store);
    expect(await store.deposit(tx)).toMatchObject({ tx, session_id: `x402:${id}`, kind: "x402", payer, claimable: 0, amount: "1000" });
    expect(await store.claimDeposit(tx, "s1", "1000", payer, true)).toMatchObject({ ok: false, reason: "claimed", kind: "x402" });
    expect(await store.claimDeposit(tx, "s1", "1000", payer, false)).toMatchObject({ ok: false, reason: "claimed" });
  });

  it("drops settlement claims past SETTLEMENT_ROW_TTL_MS, never chain claims; a dropped settlement's hash is still refused", async () => {
    const store = payments(vars);
    const { payer, tx } = await settledPayment(store);
    const own = txHash();
    expect(await store.claimDeposit(own, "s1", "5", payer)).toEqual({ ok: true });
    // A later reserve, a day short of the limit, keeps it; one past the limit drops it.
    await store.reserve(uniq("later"), "1", Date.now() + SETTLEMENT_ROW_TTL_MS - 86_400_000);
    expect(await store.deposit(tx)).not.toBeNull();
    await store.reserve(uniq("later"), "1", Date.now() + SETTLEMENT_ROW_TTL_MS + 60_000);
    expect(await store.deposit(tx)).toBeNull();
    expect(await store.deposit(own)).toMatchObject({ kind: "chain", session_id: "s1" });
    expect(await store.claimDeposit(tx, "s2", "1000", payer, true)).toEqual({ ok: false, reason: "relayed" });
  });

  it("a relayed transfer nothing gave back is refused; a chain claim given back is dropped", async () => {
    const store = payments(vars);
    const alice = privateKeyToAccount(generatePrivateKey()).address.toLowerCase();
    const relayed = txHash();
    expect(await store.claimDeposit(relayed, "s1", "5", alice, true)).toEqual({ ok: false, reason: "relayed" });
    expect(await store.deposit(relayed)).toBeNull();
    const own = txHash();
    expect(await store.claimDeposit(own, "s1", "5", alice)).toEqual({ ok: true });
    expect(await store.deposit(own)).toMatchObject({ kind: "chain", payer: alice, session_id: "s1" });
    await store.unclaimDeposit(own);
    expect(await store.deposit(own)).toBeNull();
  });
});

describe("chain deposits through the router", () => {
  it("credit only the signer's own transfer, to the session it signed; without a signature: 400 on `signature`", async () => {
    const [a, b] = [generatePrivateKey(), generatePrivateKey()];
    const [sa, sb] = [await session(), await session()];
    const payTo = decodePaymentRequiredHeader(
      (await call(vars, `/sessions/${sa}/deposits`, { amount: "1" })).res.headers.get("payment-required")!,
    ).accepts[0].payTo as Address;
    const tx = txHash();
    mine(tx, privateKeyToAccount(a).address, payTo, 5000n);
    const post = (sid: string, body: object) => call(vars, `/sessions/${sid}/deposits`, { tx_hash: tx, ...body });

    const bare = await post(sb, {});
    expect(bare.res.status).toBe(400);
    expect(bare.body.error.details).toEqual([{ path: "signature", message: "missing" }]);
    const thief = await post(sb, { signature: await signDeposit(b, sb, tx) });
    expect(thief.res.status).toBe(400);
    expect(thief.body.error.details[0].path).toBe("signature");
    const replayed = await post(sb, { signature: await signDeposit(a, sa, tx) }); // Alice's, for another session
    expect(replayed.res.status).toBe(400);
    const ok = await post(sa, { signature: await signDeposit(a, sa, tx) });
    expect(ok.res.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.deposit).toMatchObject({ source: "chain", tokens: 10_000, payer: privateKeyToAccount(a).address.toLowerCase() });
    expect((await post(sa, { signature: await signDeposit(a, sa, tx) })).res.status).toBe(409);
  });

  it("an x402 deposit whose session vanished gives its settlement back to its payer alone, who credits it elsewhere once", async () => {
    const [a, b] = [generatePrivateKey(), generatePrivateKey()];
    const alice = privateKeyToAccount(a).address;
    const [gone, other] = [await session(), await session()];
    const unpaid = await call(vars, `/sessions/${gone}/deposits`, { amount: "2500" });
    expect(unpaid.res.status).toBe(402);
    const req = decodePaymentRequiredHeader(unpaid.res.headers.get("payment-required")!).accepts[0];
    const tx = txHash();
    settleAs = { tx, payer: alice, to: req.payTo as Address, amount: 2500n };
    const lost = await call(vanishing, `/sessions/${gone}/deposits`, { amount: "2500" }, { "PAYMENT-SIGNATURE": payment(req, alice) });
    expect(lost.res.status, JSON.stringify(lost.body)).toBe(404);
    expect(lost.body.error.code).toBe("session_not_found");
    expect(lost.body.error.message).toContain(tx);
    expect(lost.body.error.details).toMatchObject({ tx_hash: tx, payer: alice.toLowerCase(), claimable: true });
    expect(await payments(vars).deposit(tx)).toMatchObject({ kind: "x402", claimable: 1, payer: alice.toLowerCase() });

    const post = (key: Hex) => async () =>
      call(vars, `/sessions/${other}/deposits`, { tx_hash: tx, signature: await signDeposit(key, other, tx) });
    expect((await (await post(b))()).res.status).toBe(400); // not the payer
    const taken = await (await post(a))();
    expect(taken.res.status, JSON.stringify(taken.body)).toBe(201);
    expect(taken.body.deposit).toMatchObject({ source: "chain", tokens: 5000, amount: "2500", payer: alice.toLowerCase() });
    expect(await payments(vars).deposit(tx)).toMatchObject({ kind: "x402", claimable: 0, session_id: other });
    expect((await (await post(a))()).res.status).toBe(409);
  });

  it("an x402 per-request settlement posted as a chain deposit with its payer's signature is 409", async () => {
    const a = generatePrivateKey();
    const alice = privateKeyToAccount(a).address;
    const sid = await session();
    const unpaid = await call(vars, `/sessions/${sid}/deposits`, { amount: "700" });
    const req = decodePaymentRequiredHeader(unpaid.res.headers.get("payment-required")!).accepts[0];
    const tx = txHash();
    settleAs = { tx, payer: alice, to: req.payTo as Address, amount: 700n };
    const paid = await call(vars, `/sessions/${sid}/deposits`, { amount: "700" }, { "PAYMENT-SIGNATURE": payment(req, alice) });
    expect(paid.res.status, JSON.stringify(paid.body)).toBe(201);
    const again = await call(vars, `/sessions/${sid}/deposits`, { tx_hash: tx, signature: await signDeposit(a, sid, tx) });
    expect(again.res.status, JSON.stringify(again.body)).toBe(409);
    expect(again.body.error.details.kind).toBe("x402");
  });

  it("an x402 deposit whose credit failed with an unknown outcome keeps its settlement claimed (no second credit)", async () => {
    const a = generatePrivateKey();
    const alice = privateKeyToAccount(a).address;
    const sid = await session();
    const unpaid = await call(vars, `/sessions/${sid}/deposits`, { amount: "900" });
    const req = decodePaymentRequiredHeader(unpaid.res.headers.get("payment-required")!).accepts[0];
    const tx = txHash();
    settleAs = { tx, payer: alice, to: req.payTo as Address, amount: 900n };
    const broken = crediting(async () => {
      throw new Error("the session object broke");
    });
    const failed = await call(broken, `/sessions/${sid}/deposits`, { amount: "900" }, { "PAYMENT-SIGNATURE": payment(req, alice) });
    expect(failed.res.status).toBe(500);
    expect(failed.body.error.details).toMatchObject({ tx_hash: tx, claimable: false });
    expect(await payments(vars).deposit(tx)).toMatchObject({ kind: "x402", claimable: 0 });
    const again = await call(vars, `/sessions/${sid}/deposits`, { tx_hash: tx, signature: await signDeposit(a, sid, tx) });
    expect(again.res.status).toBe(409);
  });
});
