import { type Address, type Hex, isAddressEqual, recoverTypedDataAddress } from "viem";
import { z } from "zod";
import type { SigningDomain } from "./signing.ts";

// Signed receipts: every completion, chat, embedding, delegate, validate and factcheck answer carries one. The
// router signs (EIP-712, its ROUTER_SIGNING_KEY) what it answered and what it charged: the request, the key, the
// model, the tasks with their miners' result hashes and commitments, the verdict, the usage, the price and the
// cost, the block height. Anyone holding the receipt and the router's address (`receipt_signer` in
// GET /api/v1/info) can check it offline: in Node, in a browser, in a Worker — this module needs only viem and zod.
//
// The domain is the router's signing domain (shared/signing.ts `signingDomain`: ROUTER_NAME, version, CHAIN_ID and
// ROUTER_ADDRESS when set), so a receipt names the deployment that issued it; with the signer (each deployment's
// own key) a receipt of one deployment verifies at no other. `domain` travels in the receipt for convenience;
// pass the one GET /api/v1/info publishes (`receipt_domain`) to pin it.
//
//   import { verifyReceipt } from "./shared/receipt.ts";
//   const info = await (await fetch(`${router}/api/v1/info`, { headers: { authorization } })).json();
//   const answer = await (await fetch(`${router}/api/v1/completions`, { method: "POST", headers, body })).json();
//   await verifyReceipt(answer.receipt, info.receipt_signer, info.receipt_domain); // true; false if any field changed

const HEX32 = /^0x[0-9a-f]{64}$/;
const uint = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const hash32 = z.string().regex(HEX32, "0x + 64 lowercase hex digits") as z.ZodType<Hex>;
const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "a 0x-prefixed 20-byte hex address");
const evmAddress = address as unknown as z.ZodType<Address>;

/** The zero hash: a result hash or commitment the answer has none of (e.g. an embedding without a commitment). */
export const ZERO_HASH: Hex = `0x${"0".repeat(64)}`;

export const RECEIPT_KINDS = ["completion", "chat", "embedding", "delegate", "validate", "factcheck"] as const;
export type ReceiptKind = (typeof RECEIPT_KINDS)[number];

export const ReceiptMiner = z.strictObject({
  address,
  /** keccak256 of the text the miner revealed (what consensus compares). */
  result_hash: hash32,
  /** What the miner precommitted (shared/signing.ts `commitmentHash` of session, task, miner, result hash). */
  commitment: hash32,
  /**
   * The miner's own EIP-712 signature of that precommit (shared/signing.ts `precommitTypedData`, the deployment's
   * domain), so anyone can check the miner committed to this result without trusting the router; "0x" when the
   * work has none (embeddings).
   */
  signature: z.string().regex(/^0x([0-9a-f]{130})?$/, "0x + 65 bytes of lowercase hex, or 0x") as z.ZodType<Hex>,
  agreed: z.boolean(),
});

export const ReceiptTask = z.strictObject({
  session_id: z.string(),
  task_id: z.string(),
  miners: z.array(ReceiptMiner),
});
export type ReceiptTask = z.infer<typeof ReceiptTask>;

export const ReceiptDomain = z.strictObject({
  name: z.string(),
  version: z.string(),
  chainId: uint,
  verifyingContract: evmAddress.optional(),
});

/** The signed fields, as JSON (snake_case) — everything in a receipt but `signer` and `signature`. */
export const UnsignedReceipt = z.strictObject({
  request_id: z.string(),
  /** The id of the API key that asked (a managed key's id, or the id the router derives for a static key). */
  key_id: z.string(),
  kind: z.enum(RECEIPT_KINDS),
  /** The model as priced (the gateway's public name, else the network model id). */
  model: z.string(),
  /** The session of the task the answer reports (the first task's; "" when none ran). */
  session_id: z.string(),
  tasks: z.array(ReceiptTask),
  /** The verdict: agreed of total requested replicas (miners for a task, tasks for v3 work). */
  consensus: z.strictObject({ method: z.string(), status: z.string(), agreed: uint, total: uint }),
  /** keccak256 of the answered result text (zero when the answer reports none). */
  output_hash: hash32,
  /** What the request was charged (summed over its tasks). */
  usage: z.strictObject({ prompt_tokens: uint, completion_tokens: uint }),
  /** µUSD per 1,000,000 tokens. */
  price: z.strictObject({ prompt_per_1m: uint, completion_per_1m: uint }),
  /** µUSD: prompt = ⌈prompt_tokens × prompt_per_1m / 10⁶⌉, completion likewise, total = their sum. */
  cost: z.strictObject({ unit: z.literal("micro_usd"), prompt: uint, completion: uint, total: uint }),
  /** The oracle's block height when the answer was settled. */
  block_height: uint,
  /** Epoch milliseconds. */
  issued_at: uint,
  domain: ReceiptDomain,
  /**
   * x402 only: the payment that settled this answer (absent on every other receipt, whose signature covers the
   * fields above exactly as before). The router re-signs the receipt with it once the settlement transaction is in.
   */
  payment: z
    .strictObject({
      scheme: z.string(),
      /** CAIP-2, e.g. `eip155:31337`. */
      network: z.string(),
      asset: evmAddress,
      /** Token base units, as a decimal string. */
      amount: z.string().regex(/^\d{1,78}$/),
      payer: evmAddress,
      pay_to: evmAddress,
      /** The settlement transaction's hash. */
      transaction: hash32,
    })
    .optional(),
});
export type UnsignedReceipt = z.infer<typeof UnsignedReceipt>;
export type ReceiptPayment = NonNullable<UnsignedReceipt["payment"]>;

export const Receipt = UnsignedReceipt.extend({ signer: evmAddress, signature: z.string().regex(/^0x[0-9a-fA-F]+$/) as z.ZodType<Hex> });
export type Receipt = z.infer<typeof Receipt>;

export const RECEIPT_TYPES = {
  Receipt: [
    { name: "requestId", type: "string" },
    { name: "keyId", type: "string" },
    { name: "kind", type: "string" },
    { name: "model", type: "string" },
    { name: "session", type: "string" },
    { name: "tasks", type: "TaskRef[]" },
    { name: "consensus", type: "Verdict" },
    { name: "output", type: "bytes32" },
    { name: "promptTokens", type: "uint64" },
    { name: "completionTokens", type: "uint64" },
    { name: "pricePromptPer1m", type: "uint64" },
    { name: "priceCompletionPer1m", type: "uint64" },
    { name: "costUnit", type: "string" },
    { name: "costPrompt", type: "uint64" },
    { name: "costCompletion", type: "uint64" },
    { name: "costTotal", type: "uint64" },
    { name: "blockHeight", type: "uint64" },
    { name: "issuedAt", type: "uint64" },
  ],
  TaskRef: [
    { name: "session", type: "string" },
    { name: "task", type: "string" },
    { name: "miners", type: "MinerResult[]" },
  ],
  MinerResult: [
    { name: "miner", type: "address" },
    { name: "result", type: "bytes32" },
    { name: "commitment", type: "bytes32" },
    { name: "signature", type: "bytes" },
    { name: "agreed", type: "bool" },
  ],
  Verdict: [
    { name: "method", type: "string" },
    { name: "status", type: "string" },
    { name: "agreed", type: "uint32" },
    { name: "total", type: "uint32" },
  ],
} as const;

/** A paid (x402) receipt's types: RECEIPT_TYPES with the payment appended to Receipt. */
export const PAID_RECEIPT_TYPES = {
  ...RECEIPT_TYPES,
  Receipt: [...RECEIPT_TYPES.Receipt, { name: "payment", type: "Payment" }],
  Payment: [
    { name: "scheme", type: "string" },
    { name: "network", type: "string" },
    { name: "asset", type: "address" },
    { name: "amount", type: "uint256" },
    { name: "payer", type: "address" },
    { name: "payTo", type: "address" },
    { name: "transaction", type: "bytes32" },
  ],
} as const;

/** The EIP-712 typed data a receipt's signature covers (its own domain unless `domain` is given). */
export function receiptTypedData(r: UnsignedReceipt, domain: SigningDomain = r.domain) {
  const p = r.payment;
  const payment = p
    ? {
        payment: {
          scheme: p.scheme,
          network: p.network,
          asset: p.asset,
          amount: BigInt(p.amount),
          payer: p.payer,
          payTo: p.pay_to,
          transaction: p.transaction,
        },
      }
    : {};
  return {
    domain,
    types: (p ? PAID_RECEIPT_TYPES : RECEIPT_TYPES) as typeof RECEIPT_TYPES,
    primaryType: "Receipt" as const,
    message: {
      ...payment,
      requestId: r.request_id,
      keyId: r.key_id,
      kind: r.kind,
      model: r.model,
      session: r.session_id,
      tasks: r.tasks.map((t) => ({
        session: t.session_id,
        task: t.task_id,
        miners: t.miners.map((m) => ({
          miner: m.address.toLowerCase() as Address,
          result: m.result_hash,
          commitment: m.commitment,
          signature: m.signature,
          agreed: m.agreed,
        })),
      })),
      consensus: r.consensus,
      output: r.output_hash,
      promptTokens: BigInt(r.usage.prompt_tokens),
      completionTokens: BigInt(r.usage.completion_tokens),
      pricePromptPer1m: BigInt(r.price.prompt_per_1m),
      priceCompletionPer1m: BigInt(r.price.completion_per_1m),
      costUnit: r.cost.unit,
      costPrompt: BigInt(r.cost.prompt),
      costCompletion: BigInt(r.cost.completion),
      costTotal: BigInt(r.cost.total),
      blockHeight: BigInt(r.block_height),
      issuedAt: BigInt(r.issued_at),
    },
  };
}

/**
 * Whether `receipt` was signed by `expectedSigner` (the router's `receipt_signer`) over exactly these fields, under
 * `domain` (default: the domain the receipt names; pass the router's published `receipt_domain` to pin the
 * deployment). False for a changed, added or missing field, another signer, another domain, or anything that is
 * not a receipt; never throws.
 */
export async function verifyReceipt(receipt: unknown, expectedSigner: string, domain?: SigningDomain): Promise<boolean> {
  const parsed = Receipt.safeParse(receipt);
  if (!parsed.success || !/^0x[0-9a-fA-F]{40}$/.test(expectedSigner)) return false;
  const r = parsed.data;
  if (!isAddressEqual(r.signer, expectedSigner as Address)) return false;
  try {
    const recovered = await recoverTypedDataAddress({ ...receiptTypedData(r, domain ?? r.domain), signature: r.signature });
    return isAddressEqual(recovered, expectedSigner as Address);
  } catch {
    return false;
  }
}
