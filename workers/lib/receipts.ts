import type { Context } from "hono";
import type { Hex } from "viem";
import { type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { deploymentDomain } from "../../durable-objects/deployment.ts";
import { type BlockSnapshot, heightAt } from "../../durable-objects/oracle.ts";
import { oracle } from "../../durable-objects/stubs.ts";
import {
  type Receipt,
  type ReceiptKind,
  type ReceiptPayment,
  type ReceiptTask,
  receiptTypedData,
  type UnsignedReceipt,
  ZERO_HASH,
} from "../../shared/receipt.ts";
import { type SigningDomain, typedDataDigest } from "../../shared/signing.ts";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { type Cost, type ModelPrice, priceForModel, priceOf } from "../gateway/model-map.ts";
import { routerSigningKey } from "./secrets.ts";
import { storeReceiptBatched } from "./usage-batch.ts";

// Cost and a signed receipt for every answer (completions v1–v3, hosted, the gateway's chat/completions/embeddings,
// embeddings, delegate, validate, factcheck): one place prices the charged usage (the model map's price), signs
// the receipt (EIP-712 under the router's signing domain, key ROUTER_SIGNING_KEY; shared/receipt.ts verifies it),
// stores it for GET /api/v1/receipts/:requestId and tells the usage meter what was charged (`metered`).
//
// Storage: in the owner's UsageMeter, written after the answer (waitUntil; the answer already carries the receipt,
// which verifies on its own) in the same per-isolate batch, RPC and SQLite transaction as the owner's usage events
// (lib/usage-batch.ts), not one R2 put per answer; the meter moves pending receipts to R2 in bulk, one object per
// owner per ~10 s (durable-objects/receipt-store.ts). A GET in the same few milliseconds may miss it; a failed batch
// falls back to the per-receipt R2 key `receipts/<owner>/<request id>` (where receipts were stored before, still
// read by the route), a failure of that too is logged. Retention as payloads: PAYLOAD_RETENTION_S from issue (older
// ones read as absent; the meter prunes its own, legacy keys are deleted when read and, in production, by an R2
// lifecycle rule on `receipts/`).

export type { ReceiptKind, ReceiptTask };

/** What an answer is built from, as a route knows it; withReceipt prices and signs it. */
export interface ReceiptFacts {
  kind: ReceiptKind;
  /** The model as priced: the gateway's public id; REST routes the network model id. */
  model: string;
  /** Price per 1M tokens; default: the model map's price of `model`, else 0. */
  price?: ModelPrice;
  tasks: ReceiptTask[];
  /** What the request was charged, summed over its tasks (embeddings: completion_tokens 0). */
  usage: { prompt_tokens: number; completion_tokens: number };
  consensus: { method: string; status: string; agreed: number; total: number };
  /** keccak256 of the answered result text (the chosen replica's result hash); null: none. */
  output_hash: string | null;
  /** The block the answer settled at (its last task's finished_block); default: the oracle's height now. */
  block_height?: number;
}

const HASH32 = /^0x[0-9a-f]{64}$/;
const asHash = (h: string | null | undefined): Hex => (h && HASH32.test(h.toLowerCase()) ? (h.toLowerCase() as Hex) : ZERO_HASH);
const asSignature = (sig: string | null | undefined): Hex =>
  sig && /^0x[0-9a-f]{130}$/.test(sig.toLowerCase()) ? (sig.toLowerCase() as Hex) : "0x";

/** A finished task as a receipt names it: its committed replicas, their result hashes, commitments and signatures. */
export function taskRef(task: TaskView): ReceiptTask {
  return {
    session_id: task.session_id,
    task_id: task.task_id,
    miners: task.replicas
      .filter((r) => r.state === "committed" && r.hash)
      .map((r) => ({
        address: r.miner.toLowerCase(),
        result_hash: asHash(r.hash),
        commitment: asHash(r.commitment),
        signature: asSignature(r.signature),
        agreed: r.agreed === true,
      })),
  };
}

/** Usage a finished task was charged (nothing unless it closed with a result). */
function chargedUsage(task: TaskView | null): { prompt_tokens: number; completion_tokens: number } {
  if (!task?.result || task.status !== "closed") return { prompt_tokens: 0, completion_tokens: 0 };
  return { prompt_tokens: task.result.usage.prompt_tokens, completion_tokens: task.result.usage.completion_tokens };
}

/** Facts of an answer built from one finished task (completions v1–v3, hosted, gateway completions). */
export function taskFacts(kind: ReceiptKind, task: TaskView, model: string = task.model): ReceiptFacts {
  const c = task.consensus;
  return {
    kind,
    model,
    tasks: [taskRef(task)],
    usage: chargedUsage(task),
    consensus: { method: c?.method ?? "none", status: c?.status ?? task.status, agreed: c?.agreed.length ?? 0, total: task.redundancy },
    output_hash: task.result?.hash ?? null,
    ...(task.finished_block != null ? { block_height: task.finished_block } : {}),
  };
}

/** What workFacts reads of lib/work.ts's WorkResult (structurally, so this module does not import it back). */
export interface WorkFacts {
  runs: { task: TaskView | null }[];
  agg: { strategy: string; status: string; agreed: number[] };
}

/**
 * Facts of delegate / validate / factcheck work: every replica task that ran, their usage summed, the aggregate's
 * verdict (agreed of the requested replicas), the first agreeing replica's result as the output.
 */
export function workFacts(kind: "delegate" | "validate" | "factcheck", work: WorkFacts, model: string): ReceiptFacts {
  const tasks = work.runs.map((r) => r.task).filter((t): t is TaskView => t !== null);
  const usage = tasks
    .map(chargedUsage)
    .reduce(
      (a, u) => ({ prompt_tokens: a.prompt_tokens + u.prompt_tokens, completion_tokens: a.completion_tokens + u.completion_tokens }),
      { prompt_tokens: 0, completion_tokens: 0 },
    );
  const blocks = tasks.flatMap((t) => (t.finished_block == null ? [] : [t.finished_block]));
  const chosen = work.agg.agreed.length > 0 ? work.runs[work.agg.agreed[0]].task : null;
  return {
    kind,
    model,
    tasks: tasks.map(taskRef),
    usage,
    consensus: { method: work.agg.strategy, status: work.agg.status, agreed: work.agg.agreed.length, total: work.runs.length },
    output_hash: chosen?.result?.hash ?? null,
    ...(blocks.length > 0 ? { block_height: Math.max(...blocks) } : {}),
  };
}

let signer: { raw: string; account: PrivateKeyAccount } | null = null;

/** The router's receipt-signing account (derived once per isolate and key). */
export function receiptSigner(env: Env): PrivateKeyAccount {
  if (signer?.raw !== env.ROUTER_SIGNING_KEY) signer = { raw: env.ROUTER_SIGNING_KEY, account: privateKeyToAccount(routerSigningKey(env)) };
  return signer.account;
}

/** The domain receipts are signed under: the deployment's signing domain (shared/signing.ts). */
export function receiptDomain(env: Env): SigningDomain {
  return deploymentDomain(env);
}

let clock: { snap: BlockSnapshot; fetched: number } | null = null;

/** The block height now, from a per-isolate snapshot of the oracle (refreshed each minute). */
async function currentHeight(env: Env): Promise<number> {
  const now = Date.now();
  if (!clock || now - clock.fetched > 60_000) clock = { snap: await oracle(env).snapshot(), fetched: now };
  return heightAt(clock.snap, now);
}

/** The id of the key the request authenticated with (auth sets it for managed and static keys alike). */
function keyIdOf(c: Context<AppEnv>): string {
  return c.get("keyId") ?? `owner:${c.get("owner")}`;
}

/** Where an owner's receipt was stored before the meter kept them (still read; written when a batch fails). */
export function receiptKey(owner: string, requestId: string): string {
  return `receipts/${encodeURIComponent(owner)}/${requestId}`;
}

/** Builds and signs the receipt of `facts` for the request of `c`. */
export async function signReceipt(c: Context<AppEnv>, facts: ReceiptFacts): Promise<{ cost: Cost; receipt: Receipt }> {
  const price = facts.price ?? priceForModel(c.env, facts.model) ?? { prompt_per_1m: 0, completion_per_1m: 0 };
  const cost = priceOf(price, facts.usage);
  const unsigned: UnsignedReceipt = {
    request_id: c.get("requestId"),
    key_id: keyIdOf(c),
    kind: facts.kind,
    model: facts.model,
    session_id: facts.tasks[0]?.session_id ?? "",
    tasks: facts.tasks,
    consensus: facts.consensus,
    output_hash: asHash(facts.output_hash),
    usage: { prompt_tokens: facts.usage.prompt_tokens, completion_tokens: facts.usage.completion_tokens },
    price: { prompt_per_1m: price.prompt_per_1m, completion_per_1m: price.completion_per_1m },
    cost: { unit: "micro_usd", prompt: cost.prompt, completion: cost.completion, total: cost.total },
    block_height: facts.block_height ?? (await currentHeight(c.env)),
    issued_at: Date.now(),
    domain: receiptDomain(c.env),
  };
  const account = receiptSigner(c.env);
  // Over the digest with the domain separator cached (shared/signing.ts): the signature signTypedData would make.
  const signature = await account.sign({ hash: typedDataDigest(receiptTypedData(unsigned)) });
  return { cost, receipt: { ...unsigned, signer: account.address, signature } };
}

/** Stores a receipt for its owner; a failed write is logged, never thrown (the receipt verifies on its own). */
async function storeReceipt(c: Context<AppEnv>, receipt: Receipt): Promise<void> {
  const owner = c.get("owner");
  const body = JSON.stringify(receipt);
  try {
    await storeReceiptBatched(c.env, owner, { request_id: receipt.request_id, issued_at: receipt.issued_at, body });
    return;
  } catch (err) {
    console.error(`request ${receipt.request_id}: its receipt's batch failed, storing it alone`, err);
  }
  try {
    await c.env.PAYLOADS.put(receiptKey(owner, receipt.request_id), body, {
      httpMetadata: { contentType: "application/json" },
      customMetadata: { issued_at: String(receipt.issued_at) },
    });
  } catch (err) {
    console.error(`request ${receipt.request_id}: storing its receipt failed`, err);
  }
}

/** For a streamed answer: `x-receipt-id` before the first byte (its receipt comes in the final chunk). */
export function receiptHeaders(c: Context<AppEnv>): void {
  c.header("x-receipt-id", c.get("requestId"));
}

/**
 * Prices, signs and stores (in the background) the receipt of an answer, tells the usage meter (`metered`), and (unless
 * `headers: false`, as for a stream whose headers are gone) sets `x-cost` (total µUSD) and `x-receipt-id`.
 * Routes put the returned `cost` and `receipt` in their body or final chunk.
 */
export async function withReceipt(
  c: Context<AppEnv>,
  facts: ReceiptFacts,
  opts: { headers?: boolean } = {},
): Promise<{ cost: Cost; receipt: Receipt }> {
  const out = await signReceipt(c, facts);
  const stored = storeReceipt(c, out.receipt);
  try {
    c.executionCtx.waitUntil(stored);
  } catch {
    await stored; // no execution context (a bare app.fetch): store before answering
  }
  const { usage } = out.receipt;
  c.set("metered", {
    model: facts.model,
    session_id: out.receipt.session_id,
    task_ids: facts.tasks.map((t) => t.task_id),
    usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
    cost: out.cost,
  });
  if (opts.headers !== false) {
    c.header("x-cost", String(out.cost.total));
    receiptHeaders(c);
  }
  return out;
}

/**
 * An x402 answer's receipt with the payment that settled it (shared/receipt.ts `payment`), signed again and stored
 * again under the same request id (the receipt without it, signed when the answer was built, is replaced).
 */
export async function withPaymentReceipt(c: Context<AppEnv>, receipt: Receipt, payment: ReceiptPayment): Promise<Receipt> {
  const { signer: _signer, signature: _signature, ...unsigned } = receipt;
  const paid: UnsignedReceipt = { ...unsigned, payment };
  const account = receiptSigner(c.env);
  const signed: Receipt = {
    ...paid,
    signer: account.address,
    signature: await account.sign({ hash: typedDataDigest(receiptTypedData(paid)) }),
  };
  const stored = storeReceipt(c, signed);
  try {
    c.executionCtx.waitUntil(stored);
  } catch {
    await stored;
  }
  return signed;
}
