import { type Hex, keccak256, stringToBytes, TransactionReceiptNotFoundError } from "viem";
import type { ChainConfig } from "../shared/chain.ts";
import { publicClient, readStake, routerAccount, type SignedTx, signRouterTx, slashBatchData } from "./chain-stake.ts";
import { settleStake } from "./reputation.ts";

// Slashes on their way to the chain. The ledger row is the queue: applyOutcomes writes a slash `pending` with its
// evidence; the NodePool's alarm batches pending rows into one `slashBatch` from the router key. The batch is
// signed first and its hash, raw bytes and nonce written to every row (`submitted`) before it is sent, so a crash
// at any point leaves a row that knows its transaction: later passes look for its receipt, send the same bytes
// again while the nonce is unused, and only when the chain refused it (reverted, or its nonce went to another
// transaction) put the row back to `pending`. A slash is never in two transactions that can both be mined.

const BATCH = 64;
const MAX_ATTEMPTS = 8;
/** How soon an outstanding (sent, not yet mined) batch is looked at again. */
const RECHECK_MS = 2_000;

const backoff = (attempts: number) => Math.min(300_000, 2_000 * 2 ** attempts);

/** JSON with object keys sorted at every level: the bytes an evidence hash covers. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}

/** The evidence's canonical bytes and their keccak256 (its R2 key is `evidence/<hash>.json`). */
export function evidenceDigest(evidence: unknown): { json: string; hash: Hex } {
  const json = canonicalJson(evidence);
  return { json, hash: keccak256(stringToBytes(json)) };
}

export interface PumpResult {
  /** Miners whose stake figure changed (a slash confirmed, or their stake was read again). */
  touched: Set<string>;
  /** When the queue needs another pass (null: empty). */
  next: number | null;
}

interface Outstanding {
  tx_hash: Hex;
  tx_raw: Hex;
  tx_nonce: number;
}

/** Looks after sent batches, then sends the next one. Chain errors are recorded on the rows, never thrown. */
export async function pumpSlashes(sql: SqlStorage, env: Env, cfg: ChainConfig, evidence: R2Bucket, now = Date.now()): Promise<PumpResult> {
  const touched = new Set<string>();
  for (const tx of sql.exec<Outstanding & Record<string, SqlStorageValue>>(
    `SELECT DISTINCT tx_hash, tx_raw, tx_nonce FROM ledger WHERE status = 'submitted' AND tx_hash IS NOT NULL`,
  )) {
    await follow(sql, env, cfg, tx, now, touched);
  }
  await sendBatch(sql, env, cfg, evidence, now, touched);
  await rereadStakes(sql, cfg, touched, now);
  return { touched, next: nextPass(sql, now) };
}

function nextPass(sql: SqlStorage, now: number): number | null {
  const r = sql
    .exec<{ submitted: number; pending: number | null }>(
      `SELECT (SELECT COUNT(*) FROM ledger WHERE status = 'submitted') AS submitted,
              (SELECT MIN(next_try_at) FROM ledger WHERE status = 'pending') AS pending`,
    )
    .one();
  const times = [r.submitted > 0 ? now + RECHECK_MS : null, r.pending === null ? null : Math.max(now + 250, r.pending)];
  const due = times.filter((t): t is number => t !== null);
  return due.length ? Math.min(...due) : null;
}

/** One sent batch: confirmed, refused (back to pending), or still out there (its same bytes sent again). */
async function follow(sql: SqlStorage, env: Env, cfg: ChainConfig, tx: Outstanding, now: number, touched: Set<string>): Promise<void> {
  const client = publicClient(cfg);
  let receipt: Awaited<ReturnType<typeof client.getTransactionReceipt>> | null;
  try {
    receipt = await client.getTransactionReceipt({ hash: tx.tx_hash });
  } catch (err) {
    if (!(err instanceof TransactionReceiptNotFoundError)) return; // the chain did not answer: next pass
    receipt = null;
  }
  if (receipt?.status === "success") {
    for (const r of sql.exec<{ miner: string }>(`SELECT DISTINCT miner FROM ledger WHERE tx_hash = ? AND status = 'submitted'`, tx.tx_hash))
      touched.add(r.miner);
    sql.exec(
      `UPDATE ledger SET status = 'confirmed', chain_block = ?, tx_raw = NULL, last_error = NULL WHERE tx_hash = ? AND status = 'submitted'`,
      Number(receipt.blockNumber),
      tx.tx_hash,
    );
    return;
  }
  if (receipt) return retry(sql, `tx_hash = '${tx.tx_hash}'`, `slash batch ${tx.tx_hash} reverted`, now);
  // Not mined. Its nonce used by another transaction means it never will be: the slashes go out again.
  const used = await client.getTransactionCount({ address: routerAccount(env).address, blockTag: "latest" }).catch(() => null);
  if (used === null) return;
  if (used > tx.tx_nonce)
    return retry(sql, `tx_hash = '${tx.tx_hash}'`, `slash batch ${tx.tx_hash} dropped (nonce ${tx.tx_nonce} used)`, now);
  await client.sendRawTransaction({ serializedTransaction: tx.tx_raw }).catch(() => {}); // the same bytes: at most once on chain
}

/** Rows the chain refused go back to pending after a backoff, or give up as `failed` after MAX_ATTEMPTS. */
function retry(sql: SqlStorage, where: string, error: string, now: number): void {
  for (const r of sql.exec<{ id: number; attempts: number }>(
    `SELECT id, attempts FROM ledger WHERE ${where} AND status IN ('pending', 'submitted')`,
  )) {
    const attempts = r.attempts + 1;
    sql.exec(
      `UPDATE ledger SET status = ?, attempts = ?, next_try_at = ?, last_error = ?, tx_hash = NULL, tx_raw = NULL, tx_nonce = NULL WHERE id = ?`,
      attempts >= MAX_ATTEMPTS ? "failed" : "pending",
      attempts,
      now + backoff(attempts),
      error.slice(0, 500),
      r.id,
    );
  }
  console.error(`slash queue: ${error}`);
}

interface PendingSlash extends Record<string, SqlStorageValue> {
  id: number;
  miner: string;
  amount: number;
  evidence: string | null;
  evidence_hash: string | null;
}

/** Writes the evidence files, signs one batch of pending slashes, records it on the rows, then sends it. */
async function sendBatch(sql: SqlStorage, env: Env, cfg: ChainConfig, bucket: R2Bucket, now: number, touched: Set<string>): Promise<void> {
  const rows = sql
    .exec<PendingSlash>(
      `SELECT id, miner, amount, evidence, evidence_hash FROM ledger WHERE status = 'pending' AND next_try_at <= ? ORDER BY id LIMIT ?`,
      now,
      BATCH,
    )
    .toArray();
  if (rows.length === 0) return;
  const ids = JSON.stringify(rows.map((r) => r.id));
  const inBatch = `id IN (SELECT value FROM json_each('${ids}'))`;
  let signed: SignedTx;
  try {
    const entries = [];
    for (const r of rows) {
      const { json, hash } = evidenceDigest(JSON.parse(r.evidence ?? "null"));
      if (r.evidence_hash !== hash) {
        await bucket.put(`evidence/${hash}.json`, json, { httpMetadata: { contentType: "application/json" } });
        sql.exec(`UPDATE ledger SET evidence_hash = ? WHERE id = ?`, hash, r.id);
      }
      entries.push({ miner: r.miner, amount: r.amount, evidence: hash });
    }
    // Preparing estimates gas: a batch the chain would refuse (not a slasher, paused…) fails here, before it is sent.
    signed = await signRouterTx(env, cfg, { to: cfg.staking, data: slashBatchData(entries) });
  } catch (err) {
    return retry(sql, inBatch, `slash batch not sent: ${String((err as Error).message ?? err).split("\n")[0]}`, now);
  }
  // Written before it is sent: from here on these rows name this transaction until the chain settles it.
  sql.exec(
    `UPDATE ledger SET status = 'submitted', tx_hash = ?, tx_raw = ?, tx_nonce = ? WHERE ${inBatch} AND status = 'pending'`,
    signed.hash,
    signed.raw,
    signed.nonce,
  );
  try {
    await publicClient(cfg).sendRawTransaction({ serializedTransaction: signed.raw });
  } catch (err) {
    // Left `submitted`: the next pass finds its receipt, or sees its nonce taken by nothing and sends it again.
    console.error(`slash batch ${signed.hash} send failed: ${String((err as Error).message ?? err).split("\n")[0]}`);
    return;
  }
  // A local chain mines at once: confirm in this pass when the receipt is already there.
  await publicClient(cfg)
    .waitForTransactionReceipt({ hash: signed.hash, timeout: 5_000, pollingInterval: 250 })
    .catch(() => null);
  await follow(sql, env, cfg, { tx_hash: signed.hash, tx_raw: signed.raw, tx_nonce: signed.nonce }, now, touched);
}

/** After a confirmation the chain's stake moved: read it again, so confirmed slashes are not counted twice. */
async function rereadStakes(sql: SqlStorage, cfg: ChainConfig, miners: Set<string>, now: number): Promise<void> {
  for (const miner of miners) {
    const read = await readStake(cfg, miner).catch(() => null);
    if (read) recordStake(sql, miner, read.stake, read.block, now);
  }
}

/** Writes a stake figure read from the chain and recomputes what it does not reflect yet. */
export function recordStake(sql: SqlStorage, miner: string, stake: number, block: number, now: number): void {
  sql.exec(
    `UPDATE miners SET stake = ?, stake_block = ?, stake_checked_at = ?, stake_source = 'chain' WHERE address = ?`,
    stake,
    block,
    now,
    miner,
  );
  settleStake(sql, miner);
}
