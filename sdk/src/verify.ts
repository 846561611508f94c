import { type Address, getAddress, isAddressEqual, recoverTypedDataAddress } from "viem";
import { type Receipt, verifyReceipt } from "../../shared/receipt.ts";
import { commitmentHash, precommitTypedData, resultHash, type SigningDomain } from "../../shared/signing.ts";

// Checking an answer without trusting the router. The evidence is the answer's signed receipt (shared/receipt.ts):
// for every task the miners' result hashes, their commitments and their own EIP-712 precommit signatures, the
// verdict (agreed of total), and the hash of the text answered. Three layers, each independent of the router's word:
//   1. each miner's precommit signature recovers to that miner, over the commitment recomputed from (session, task,
//      miner, result hash) — the miner, not the router, committed to that result;
//   2. the verdict follows: the text answered hashes to `output_hash`, enough agreeing miners (a strict majority
//      of the replicas requested) committed to exactly that hash (or, for similarity, it is one of theirs);
//   3. the receipt is signed by the router's key over exactly these fields, under its domain.
// The trust anchor is the router's signer address and domain: pinned by the caller (`trust`), or read once from
// GET /api/v1/info (trust on first use).

export interface TrustAnchor {
  /** The router's receipt signer (`receipt_signer` of GET /api/v1/info). */
  signer: Address;
  /** Its EIP-712 domain (`receipt_domain`): also the domain miners sign precommits under. */
  domain: SigningDomain;
}

export interface VerifyOptions {
  /** Accept a best-effort answer given without a quorum (`consensus.status: "no_quorum"`); default false. */
  allowNoQuorum?: boolean;
}

export interface VerificationReport {
  ok: boolean;
  problems: string[];
  /** Miners whose precommit signatures were checked (work with signatures: not embeddings). */
  minersChecked: number;
  receiptSigned: boolean;
}

const quorumOf = (total: number) => Math.floor(total / 2) + 1;

/**
 * Checks `receipt` (and, for completions, the `text` answered) against `trust`. Never throws for bad evidence: the
 * report lists what failed.
 */
export async function verifyEvidence(
  receipt: Receipt | undefined,
  text: string | undefined,
  trust: TrustAnchor,
  opts: VerifyOptions = {},
): Promise<VerificationReport> {
  const problems: string[] = [];
  if (!receipt) return { ok: false, problems: ["the answer carries no receipt"], minersChecked: 0, receiptSigned: false };

  const receiptSigned = await verifyReceipt(receipt, trust.signer, trust.domain);
  if (!receiptSigned) problems.push(`the receipt is not signed by the router ${trust.signer} under its domain`);

  let minersChecked = 0;
  for (const task of receipt.tasks ?? []) {
    for (const m of task.miners) {
      if (m.signature === "0x") continue; // embeddings: no precommit
      minersChecked++;
      const where = `miner ${m.address} on task ${task.session_id}/${task.task_id}`;
      const expected = commitmentHash({
        session: task.session_id,
        task: task.task_id,
        miner: getAddress(m.address),
        result: m.result_hash,
      });
      if (expected !== m.commitment) {
        problems.push(`${where}: commitment ${m.commitment} is not the commitment to result ${m.result_hash}`);
        continue;
      }
      try {
        const signer = await recoverTypedDataAddress({
          ...precommitTypedData(
            { session: task.session_id, task: task.task_id, miner: getAddress(m.address), hash: m.commitment },
            trust.domain,
          ),
          signature: m.signature,
        });
        if (!isAddressEqual(signer, m.address as Address))
          problems.push(`${where}: the precommit signature recovers to ${signer}, not the miner`);
      } catch (err) {
        problems.push(`${where}: unreadable precommit signature (${(err as Error).message})`);
      }
    }
  }

  if (receipt.kind === "completion" || receipt.kind === "chat") checkCompletionVerdict(receipt, text, opts, problems);
  else if (receipt.consensus.agreed > receipt.consensus.total)
    problems.push("the verdict counts more agreeing replicas than were requested");
  return { ok: problems.length === 0, problems, minersChecked, receiptSigned };
}

/** A completion's verdict: its text is the agreed result, and enough miners committed to it. */
function checkCompletionVerdict(receipt: Receipt, text: string | undefined, opts: VerifyOptions, problems: string[]): void {
  if (text !== undefined && resultHash(text) !== receipt.output_hash) {
    problems.push(`the text answered hashes to ${resultHash(text)}, not the receipt's output ${receipt.output_hash}`);
  }
  const { method, status, agreed, total } = receipt.consensus;
  const miners = receipt.tasks.flatMap((t) => t.miners);
  const agreeing = miners.filter((m) => m.agreed);
  if (agreeing.length !== agreed) problems.push(`the verdict says ${agreed} agreed but ${agreeing.length} miners are marked agreeing`);
  const onOutput = agreeing.filter((m) => m.result_hash === receipt.output_hash);
  if (method === "similarity") {
    // Similar, not equal, outputs agree; the answer must still be one an agreeing miner committed to.
    if (onOutput.length === 0) problems.push("no agreeing miner committed to the text answered");
  } else if (onOutput.length !== agreeing.length) {
    problems.push(`${agreeing.length - onOutput.length} miner(s) marked agreeing committed to another result`);
  }
  if (status === "no_quorum") {
    if (!opts.allowNoQuorum) problems.push("the answer was given without a quorum (best effort)");
  } else if (new Set(agreeing.map((m) => m.address.toLowerCase())).size < quorumOf(total)) {
    problems.push(`${agreeing.length} agreeing miner(s) of ${total} replicas is not a quorum (${quorumOf(total)} needed)`);
  }
}
