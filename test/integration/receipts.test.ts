import { recoverTypedDataAddress } from "viem";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Receipt, verifyReceipt, ZERO_HASH } from "../../shared/receipt.ts";
import { commitmentHash, precommitTypedData } from "../../shared/signing.ts";
import type { TaskView } from "../../shared/views.ts";
import { priceOf } from "../../workers/gateway/model-map.ts";
import { api, type Miner, type Router, sse, startMiner, startRouter, until } from "../helpers/network.ts";

// Cost and signed receipts through the real router (wrangler dev) and two real miner processes running the
// built-in model, in a redundancy-2 session: a v1, a v3, a streamed, a delegate and a hosted completion each
// carry a receipt that verifies (shared/receipt.ts) against the signer GET /api/v1/info names, whose tasks,
// miners and commitments are those of the task view, whose cost is the model map's price × the charged usage,
// and which GET /api/v1/receipts/:requestId serves again to its owner only.

const BOB = "bob-key-0123456789abcdef";
const PRICE = { prompt_per_1m: 1_300_000, completion_per_1m: 4_700_000 };
const MODEL = "edge/tiny-gpt2";

let router: Router;
let miners: Miner[] = [];
let sid = "";
let info: { receipt_signer: string; receipt_domain: Receipt["domain"] };

beforeAll(async () => {
  router = await startRouter({
    vars: {
      API_KEYS: `dev:dev-key,bob:${BOB}`,
      MODEL_MAP: JSON.stringify({
        models: [
          { id: "tiny", network_model: MODEL, kind: "chat", price: PRICE },
          { id: "tiny-embed", network_model: "edge/tiny-embed", kind: "embedding", price: PRICE },
        ],
      }),
    },
  });
  miners = await Promise.all([startMiner(router.url, { name: "r-a" }), startMiner(router.url, { name: "r-b" })]);
  await Promise.all(miners.map((m) => m.waitFor("ready", undefined, 120_000)));
  const created = await api(router, "/api/v1/sessions", { body: { deposit: 10_000_000, redundancy: 2, max_miners: 2, task_timeout: 60 } });
  if (created.status !== 201) throw new Error(`session: ${created.status} ${JSON.stringify(created.body)}`);
  sid = created.body.config.id;
  info = (await api(router, "/api/v1/info")).body;
});

afterAll(async () => {
  await Promise.all(miners.map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

/** The stored receipt (written just after the answer, in the background: a few ms at most). */
function stored(requestId: string) {
  return until(async () => {
    const res = await api(router, `/api/v1/receipts/${requestId}`);
    return res.status === 200 ? res : null;
  }, 5_000);
}

async function taskView(session: string, task: string): Promise<TaskView> {
  const res = await api(router, `/api/v1/tasks/${session}/${task}`);
  expect(res.status).toBe(200);
  return res.body;
}

/**
 * Everything a receipt must satisfy: it verifies under the router's published signer and domain; it is the answer's
 * (request id, usage); its tasks are the task views' committed replicas with their result hashes and commitments;
 * its cost is the price × the usage; it is served again, equal, to its owner, and to nobody else.
 */
async function checkReceipt(
  receipt: Receipt,
  answer: { requestId: string | null; usage: { prompt_tokens: number; completion_tokens: number }; cost: unknown },
) {
  expect(await verifyReceipt(receipt, info.receipt_signer, info.receipt_domain)).toBe(true);
  expect(
    await verifyReceipt(
      { ...receipt, usage: { ...receipt.usage, completion_tokens: receipt.usage.completion_tokens + 1 } },
      info.receipt_signer,
    ),
  ).toBe(false);
  expect(receipt.request_id).toBe(answer.requestId);
  expect(receipt.usage).toEqual({ prompt_tokens: answer.usage.prompt_tokens, completion_tokens: answer.usage.completion_tokens });
  expect(receipt.usage.prompt_tokens + receipt.usage.completion_tokens).toBeGreaterThan(0);

  let usage = { prompt_tokens: 0, completion_tokens: 0 };
  for (const t of receipt.tasks) {
    const view = await taskView(t.session_id, t.task_id);
    const committed = view.replicas.filter((r) => r.state === "committed");
    expect(committed.length).toBeGreaterThan(0);
    expect(t.miners).toEqual(
      // An embedding's miners commit no signed commitment: the receipt names the zero hash for it.
      committed.map((r) => ({
        address: r.miner,
        result_hash: r.hash,
        commitment: r.commitment ?? ZERO_HASH,
        signature: r.signature ?? "0x",
        agreed: r.agreed === true,
      })),
    );
    // Without trusting the router: each miner's own signature of its commitment recovers to that miner.
    for (const m of t.miners.filter((x) => x.signature !== "0x")) {
      const miner = m.address as `0x${string}`;
      expect(m.commitment).toBe(commitmentHash({ session: t.session_id, task: t.task_id, miner, result: m.result_hash }));
      const fields = { session: t.session_id, task: t.task_id, miner, hash: m.commitment };
      const who = await recoverTypedDataAddress({ ...precommitTypedData(fields, receipt.domain), signature: m.signature });
      expect(who.toLowerCase()).toBe(m.address);
    }
    usage = {
      prompt_tokens: usage.prompt_tokens + view.result!.usage.prompt_tokens,
      completion_tokens: usage.completion_tokens + view.result!.usage.completion_tokens,
    };
  }
  expect(receipt.usage).toEqual(usage);

  const cost = priceOf(PRICE, receipt.usage);
  expect(cost.total).toBeGreaterThan(0);
  expect(receipt.price).toEqual(PRICE);
  expect(receipt.cost).toEqual({ unit: "micro_usd", prompt: cost.prompt, completion: cost.completion, total: cost.total });
  expect(answer.cost).toEqual(cost);

  const again = await stored(receipt.request_id);
  expect(again.body).toEqual(receipt);
  const bob = await api(router, `/api/v1/receipts/${receipt.request_id}`, { key: BOB });
  expect(bob.status).toBe(404);
  expect(bob.body.error.code).toBe("not_found");
}

describe("receipts on real answers", () => {
  it("/api/v1/info and /about name the signer and domain; the signer is not the miners' verifying address", async () => {
    expect(info.receipt_signer).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(info.receipt_domain).toMatchObject({ name: "edge-inference-router", version: "2", chainId: 31337 });
    const about = await api(router, "/api/v1/about", { key: null });
    expect(about.body.receipt_signer).toBe(info.receipt_signer);
  });

  it("a v1 completion on a redundancy-2 session: both miners and their commitments, exact consensus 2 of 2", async () => {
    const res = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: "Receipts name", max_tokens: 8 } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const receipt: Receipt = res.body.receipt;
    expect(res.headers.get("x-receipt-id")).toBe(res.headers.get("x-request-id"));
    expect(res.headers.get("x-cost")).toBe(String(res.body.cost.total));
    await checkReceipt(receipt, { requestId: res.headers.get("x-request-id"), usage: res.body.usage, cost: res.body.cost });
    expect(receipt.tasks).toHaveLength(1);
    expect(receipt.tasks[0]).toMatchObject({ session_id: sid, task_id: res.body.task_id });
    expect(receipt.tasks[0].miners.map((m) => m.address).sort()).toEqual(miners.map((m) => m.address()!.toLowerCase()).sort());
    expect(receipt).toMatchObject({
      kind: "completion",
      model: MODEL,
      consensus: { method: "exact", status: "agreed", agreed: 2, total: 2 },
    });
    expect(receipt.output_hash).toBe(res.body.consensus.hash);
    expect(receipt.tasks[0].miners.every((m) => /^0x[0-9a-f]{130}$/.test(m.signature))).toBe(true);
  });

  it("a v3 completion", async () => {
    const res = await api(router, `/api/v3/completions/${sid}`, { body: { prompt: "Receipts for v3", max_tokens: 8 } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    await checkReceipt(res.body.receipt, { requestId: res.headers.get("x-request-id"), usage: res.body.usage, cost: res.body.cost });
    expect(res.body.receipt.tasks[0].task_id).toBe(res.body.task_id);
  });

  it("a streamed completion: the final chunk carries a receipt that verifies", async () => {
    const res = await sse(router, `/api/v1/completions/${sid}`, { prompt: "Stream a receipt", max_tokens: 8, stream: true });
    expect(res.status).toBe(200);
    expect(res.events.at(-1)).toBe("[DONE]");
    const chunks = res.events.slice(0, -1).map((e) => JSON.parse(e));
    const final = chunks.at(-1);
    expect(final.choices[0].finish_reason).not.toBeNull();
    expect(chunks.slice(0, -1).some((ch) => "receipt" in ch)).toBe(false);
    expect(res.headers.get("x-receipt-id")).toBe(res.headers.get("x-request-id"));
    await checkReceipt(final.receipt, { requestId: res.headers.get("x-request-id"), usage: final.usage, cost: final.cost });
  });

  it("a delegate request", async () => {
    const res = await api(router, "/api/v1/delegate", { body: { session_id: sid, task_request_input: "Sum 2 and 2.", max_tokens: 8 } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const receipt: Receipt = res.body.receipt;
    await checkReceipt(receipt, { requestId: res.headers.get("x-request-id"), usage: res.body.usage, cost: res.body.cost });
    expect(receipt).toMatchObject({ kind: "delegate", tasks: [{ session_id: sid, task_id: res.body.task_id }] });
    expect(receipt.consensus).toMatchObject({ method: "majority", agreed: 1, total: 1 });
  });

  it("a validate request and an embedding", async () => {
    const res = await api(router, "/api/v1/validate", {
      body: { session_id: sid, task_request_input: "What is 2 + 2?", task_result_output: "4" },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const usage = res.body.receipt.usage;
    await checkReceipt(res.body.receipt, { requestId: res.headers.get("x-request-id"), usage, cost: res.body.cost });
    expect(res.body.receipt).toMatchObject({ kind: "validate", tasks: [{ session_id: sid }] });
    expect(res.body.receipt.tasks[0].task_id).toBe(res.body.replicas[0].task_id);

    const emb = await api(router, `/api/v1/embeddings/${sid}`, { body: { input: ["receipts for vectors"] } });
    expect(emb.status, JSON.stringify(emb.body)).toBe(200);
    await checkReceipt(emb.body.receipt, {
      requestId: emb.headers.get("x-request-id"),
      usage: { ...emb.body.usage, completion_tokens: 0 },
      cost: emb.body.cost,
    });
    expect(emb.body.receipt).toMatchObject({ kind: "embedding", model: "edge/tiny-embed", tasks: [{ task_id: emb.body.task_id }] });
  });

  it("a hosted completion (POST /v1/completions)", async () => {
    const res = await api(router, "/v1/completions", { body: { prompt: "Hosted receipt", max_tokens: 8, session_id: sid } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.status).toBe("ok");
    await checkReceipt(res.body.receipt, { requestId: res.headers.get("x-request-id"), usage: res.body.data.usage, cost: res.body.cost });
    expect(res.body.receipt.tasks[0].task_id).toBe(res.body.data.task_id);
  });

  it("tenant B cannot read A's receipts, nor its unknown or malformed ids", async () => {
    const res = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: "Private receipt", max_tokens: 4 } });
    const id = res.headers.get("x-request-id")!;
    expect((await stored(id)).status).toBe(200);
    for (const path of [`/api/v1/receipts/${id}`, `/api/v1/receipts/${crypto.randomUUID()}`]) {
      const bob = await api(router, path, { key: BOB });
      expect(bob.status).toBe(404);
    }
    expect((await api(router, "/api/v1/receipts/not-a-request-id", { key: BOB })).status).toBe(400);
    expect((await api(router, `/api/v1/receipts/${id}`, { key: null })).status).toBe(401);
  });
});
