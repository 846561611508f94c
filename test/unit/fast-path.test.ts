import { hashTypedData } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { usageMeter } from "../../durable-objects/stubs.ts";
import type { UsageEvent } from "../../durable-objects/usage-meter.ts";
import { receiptTypedData, type UnsignedReceipt, verifyReceipt } from "../../shared/receipt.ts";
import { resultHash, signingDomain, typedDataDigest } from "../../shared/signing.ts";
import { meterUsage } from "../../workers/lib/usage-batch.ts";
import { countingMeters } from "./app-calls.ts";
import { env, uniq } from "./helpers.ts";

// The router's hot-path cuts of issue 18 change how work is done, never what it yields: a receipt signed over the
// cached-separator digest is the signature signTypedData makes (and verifies), and usage events metered in batches
// add up to exactly the events sent, each caller learning whether its own batch was written.

const DOMAINS = [
  signingDomain({ name: "edge-inference-router", chain_id: 31337, address: null }),
  signingDomain({ name: "edge-inference-router", chain_id: 31337, address: "0x00000000000000000000000000000000000000b2" }),
];

function receipt(i: number, domain: (typeof DOMAINS)[number], paid: boolean): UnsignedReceipt {
  const miner = `0x${(i + 1).toString(16).padStart(40, "0")}`;
  return {
    request_id: crypto.randomUUID(),
    key_id: `key_${i}`,
    kind: "completion",
    model: "edge/tiny-gpt2",
    session_id: "default",
    tasks: [
      {
        session_id: "default",
        task_id: String(i),
        miners: [{ address: miner, result_hash: resultHash(`out ${i}`), commitment: resultHash(`c ${i}`), signature: "0x", agreed: true }],
      },
    ],
    consensus: { method: "exact", status: "agreed", agreed: 1, total: 1 },
    output_hash: resultHash(`out ${i}`),
    usage: { prompt_tokens: 3 + i, completion_tokens: i },
    price: { prompt_per_1m: 100, completion_per_1m: 200 },
    cost: { unit: "micro_usd", prompt: i, completion: 2 * i, total: 3 * i },
    block_height: 1000 + i,
    issued_at: 1_764_000_000_000 + i,
    domain,
    ...(paid
      ? {
          payment: {
            scheme: "exact",
            network: "local",
            asset: "0x00000000000000000000000000000000000000c3",
            amount: String(10n ** 18n + BigInt(i)),
            payer: "0x00000000000000000000000000000000000000d4",
            pay_to: "0x00000000000000000000000000000000000000e5",
            transaction: resultHash(`tx ${i}`),
          },
        }
      : {}),
  } as UnsignedReceipt;
}

describe("receipt signing over the cached-separator digest (shared/signing.ts typedDataDigest)", () => {
  it("is EIP-712's digest for plain and paid receipts under each domain, cached or not", () => {
    for (let i = 0; i < 4; i++) {
      for (const domain of [...DOMAINS, ...DOMAINS]) {
        for (const paid of [false, true]) {
          const td = receiptTypedData(receipt(i, domain, paid));
          expect(typedDataDigest(td)).toBe(hashTypedData(td));
        }
      }
    }
    const td = (d: (typeof DOMAINS)[number]) =>
      receiptTypedData({ ...receipt(1, d, false), request_id: "6f1b7c1e-4a43-4d2e-9a55-0d1f7b0c2e11" });
    expect(typedDataDigest(td(DOMAINS[0]))).not.toBe(typedDataDigest(td(DOMAINS[1])));
  });

  it("signs what signTypedData signs, and the receipt verifies; a changed field does not", async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    for (const paid of [false, true]) {
      const unsigned = receipt(2, DOMAINS[1], paid);
      const signature = await account.sign({ hash: typedDataDigest(receiptTypedData(unsigned)) });
      expect(signature).toBe(await account.signTypedData(receiptTypedData(unsigned)));
      const signed = { ...unsigned, signer: account.address, signature };
      expect(await verifyReceipt(signed, account.address)).toBe(true);
      expect(await verifyReceipt({ ...signed, usage: { ...signed.usage, completion_tokens: 99 } }, account.address)).toBe(false);
    }
  });

  it("throws, as signTypedData does, on a field that is not what its type says", () => {
    const bad = receiptTypedData(receipt(3, DOMAINS[0], false));
    bad.message.tasks[0].miners[0].miner = "0x1234" as `0x${string}`;
    expect(() => typedDataDigest(bad)).toThrow();
  });
});

const event = (key: string, i: number): UsageEvent => ({
  key_id: key,
  model: "edge/tiny-gpt2",
  at: Date.now(),
  prompt_tokens: i,
  completion_tokens: 2 * i,
  cost: 3 * i,
  latency_ms: 10,
  failed: i % 5 === 0,
  request: true,
});

async function totals(owner: string) {
  const rows = await usageMeter(env, owner).query({ bucket: "minute", from: Date.now() - 3_600_000, to: Date.now() + 60_000 });
  const sum = (k: "requests" | "prompt_tokens" | "completion_tokens" | "cost" | "failures") => rows.reduce((n, r) => n + r[k], 0);
  return {
    requests: sum("requests"),
    prompt: sum("prompt_tokens"),
    completion: sum("completion_tokens"),
    cost: sum("cost"),
    failures: sum("failures"),
  };
}

describe("usage metered in batches (workers/lib/usage-batch.ts)", () => {
  it("events sent together share one call, and every event is recorded once", async () => {
    const owner = uniq("batch-owner");
    const counted = countingMeters();
    const n = 40;
    await Promise.all(Array.from({ length: n }, (_, i) => meterUsage(counted.env, owner, [event("k1", i + 1)])));
    expect(counted.batches()).toBe(1);
    const expectSum = (f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i + 1)).reduce((a, b) => a + b, 0);
    expect(await totals(owner)).toEqual({
      requests: n,
      prompt: expectSum((i) => i),
      completion: expectSum((i) => 2 * i),
      cost: expectSum((i) => 3 * i),
      failures: expectSum((i) => (i % 5 === 0 ? 1 : 0)),
    });
  });

  it("a full batch is sent at once (64 events), the rest in the next; owners never share a batch", async () => {
    const [a, b] = [uniq("batch-a"), uniq("batch-b")];
    const counted = countingMeters();
    await Promise.all([
      ...Array.from({ length: 100 }, (_, i) => meterUsage(counted.env, a, [event("ka", i)])),
      ...Array.from({ length: 3 }, (_, i) => meterUsage(counted.env, b, [event("kb", i)])),
    ]);
    expect(counted.batches()).toBe(3); // a: 64 + 36; b: 3
    expect((await totals(a)).requests).toBe(100);
    expect((await totals(b)).requests).toBe(3);
  });

  it("a batch that fails is reported to every request in it, and the next batch is unaffected", async () => {
    const owner = uniq("batch-fail");
    let fail = true;
    const counted = countingMeters((real) => ({
      recordMany: (events: UsageEvent[]) =>
        fail
          ? Promise.reject(new Error("meter down"))
          : (real as unknown as { recordMany: (e: UsageEvent[]) => Promise<void> }).recordMany(events),
    }));
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => meterUsage(counted.env, owner, [event("kf", i)])));
    expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill("rejected"));
    fail = false;
    await meterUsage(counted.env, owner, [event("kf", 1)]);
    expect((await totals(owner)).requests).toBe(1);
  });
});
