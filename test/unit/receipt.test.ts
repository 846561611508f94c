import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { type Receipt, receiptTypedData, type UnsignedReceipt, verifyReceipt } from "../../shared/receipt.ts";
import { commitmentHash, resultHash } from "../../shared/signing.ts";
import { priceOf } from "../../workers/gateway/model-map.ts";
import app from "../../workers/index.ts";
import { receiptKey } from "../../workers/lib/receipts.ts";
import { callApp } from "./app-calls.ts";
import { createSession, env, getTask, json, MinerSet, ORIGIN, readSSE, uniq, waitFor } from "./helpers.ts";

// Receipts: the signature covers every field (each one altered fails), binds the signer and the deployment's
// domain; and every answer of the router carries one that verifies against the signer /api/v1/info names, that
// names the task's miners and commitments as the task view does, is priced by the model map, and is served again
// by request id to its owner only. (Real miners and the other routes: test/integration/receipts.test.ts.)

const signerKey = generatePrivateKey();
const signer = privateKeyToAccount(signerKey);
const DOMAIN = {
  name: "edge-inference-router",
  version: "2",
  chainId: 31337,
  verifyingContract: "0x00000000000000000000000000000000000000aa" as const,
};

const h = (s: string) => resultHash(s);
const addr = (n: number) => `0x${n.toString(16).padStart(40, "0")}`;

function fixture(): UnsignedReceipt {
  const m = (session: string, task: string, n: number, agreed: boolean) => ({
    address: addr(n),
    result_hash: h(`out ${n}`),
    commitment: commitmentHash({ session, task, miner: addr(n) as `0x${string}`, result: h(`out ${n}`) }),
    signature: `0x${n.toString(16).repeat(130)}` as `0x${string}`,
    agreed,
  });
  return {
    request_id: "6f1b7c1e-4a43-4d2e-9a55-0d1f7b0c2e11",
    key_id: "key_123",
    kind: "delegate",
    model: "edge/tiny-gpt2",
    session_id: "s1",
    tasks: [
      { session_id: "s1", task_id: "7", miners: [m("s1", "7", 1, true), m("s1", "7", 2, false)] },
      { session_id: "s2", task_id: "9", miners: [m("s2", "9", 3, true)] },
    ],
    consensus: { method: "majority", status: "majority", agreed: 2, total: 3 },
    output_hash: h("out 1"),
    usage: { prompt_tokens: 120, completion_tokens: 33 },
    price: { prompt_per_1m: 100_000, completion_per_1m: 200_000 },
    cost: { unit: "micro_usd", prompt: 12, completion: 7, total: 19 },
    block_height: 4242,
    issued_at: 1_764_000_000_000,
    domain: DOMAIN,
  };
}

async function sign(r: UnsignedReceipt, account = signer): Promise<Receipt> {
  return { ...r, signer: account.address, signature: await account.signTypedData(receiptTypedData(r)) };
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

/** Every leaf of a JSON value, as a path. */
function leaves(v: Json, path: (string | number)[] = []): (string | number)[][] {
  if (v !== null && typeof v === "object") {
    return Object.entries(v).flatMap(([k, x]) => leaves(x as Json, [...path, Array.isArray(v) ? Number(k) : k]));
  }
  return [path];
}

/** A value of the same kind that differs from `v`. */
function altered(v: Json): Json {
  if (typeof v === "boolean") return !v;
  if (typeof v === "number") return v + 1;
  if (typeof v === "string" && /^0x[0-9a-fA-F]+$/.test(v)) {
    const last = v.at(-1)!.toLowerCase();
    return v.slice(0, -1) + (last === "0" ? "1" : "0");
  }
  if (typeof v === "string") return v === "delegate" ? "validate" : `${v}x`;
  throw new Error(`no alteration for ${JSON.stringify(v)}`);
}

function withLeaf(r: Receipt, path: (string | number)[], value: Json): Receipt {
  const copy = structuredClone(r) as unknown as Record<string | number, Json>;
  let at: Record<string | number, Json> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, Json>;
  at[path.at(-1)!] = value;
  return copy as unknown as Receipt;
}

describe("the receipt signature (shared/receipt.ts)", () => {
  it("verifies as signed, against the signer alone and against the pinned domain", async () => {
    const r = await sign(fixture());
    expect(await verifyReceipt(r, signer.address)).toBe(true);
    expect(await verifyReceipt(r, signer.address.toLowerCase(), DOMAIN)).toBe(true);
    // The JSON form survives a round trip through text (what a client stores).
    expect(await verifyReceipt(JSON.parse(JSON.stringify(r)), signer.address)).toBe(true);
  });

  it("fails when ANY field is altered (every leaf, signer and signature included)", async () => {
    const r = await sign(fixture());
    const paths = leaves(r as unknown as Json);
    expect(paths.length).toBeGreaterThan(40);
    const survived: string[] = [];
    for (const path of paths) {
      const value = path.reduce<Json>((v, k) => (v as Record<string | number, Json>)[k], r as unknown as Json);
      const changed = withLeaf(r, path, altered(value));
      if (await verifyReceipt(changed, signer.address)) survived.push(path.join("."));
    }
    expect(survived).toEqual([]);
  });

  it("fails when a field is removed, added, or a task or miner is dropped", async () => {
    const r = await sign(fixture());
    const { usage: _, ...noUsage } = r;
    expect(await verifyReceipt(noUsage, signer.address)).toBe(false);
    expect(await verifyReceipt({ ...r, note: "unsigned" }, signer.address)).toBe(false);
    expect(await verifyReceipt({ ...r, tasks: r.tasks.slice(0, 1) }, signer.address)).toBe(false);
    const oneMiner = structuredClone(r);
    oneMiner.tasks[0].miners.pop();
    expect(await verifyReceipt(oneMiner, signer.address)).toBe(false);
  });

  it("fails for another signer: the wrong expected address, or a receipt re-signed by another key", async () => {
    const r = await sign(fixture());
    const other = privateKeyToAccount(generatePrivateKey());
    expect(await verifyReceipt(r, other.address)).toBe(false);
    const forged = await sign(fixture(), other);
    expect(await verifyReceipt(forged, signer.address)).toBe(false);
    expect(await verifyReceipt({ ...forged, signer: signer.address }, signer.address)).toBe(false);
    expect(await verifyReceipt({ ...r, signature: forged.signature }, signer.address)).toBe(false);
  });

  it("fails under another deployment's domain: chain id, name, version or verifying address", async () => {
    const r = await sign(fixture());
    for (const domain of [
      { ...DOMAIN, chainId: 1 },
      { ...DOMAIN, name: "another-router" },
      { ...DOMAIN, version: "1" },
      { ...DOMAIN, verifyingContract: addr(0xbb) as `0x${string}` },
      { name: DOMAIN.name, version: DOMAIN.version, chainId: DOMAIN.chainId },
    ]) {
      expect(await verifyReceipt(r, signer.address, domain), JSON.stringify(domain)).toBe(false);
    }
    // Signed for chain 1, presented as chain 31337 (the domain it names changed): no.
    const elsewhere = await sign({ ...fixture(), domain: { ...DOMAIN, chainId: 1 } });
    expect(await verifyReceipt(elsewhere, signer.address, DOMAIN)).toBe(false);
    expect(await verifyReceipt({ ...elsewhere, domain: DOMAIN }, signer.address)).toBe(false);
  });

  it("answers false, never throws, for what is not a receipt", async () => {
    const r = await sign(fixture());
    for (const junk of [null, undefined, "receipt", 42, {}, [], { ...r, signature: "0x1234" }, { ...r, signature: "zz" }]) {
      expect(await verifyReceipt(junk, signer.address)).toBe(false);
    }
    expect(await verifyReceipt(r, "not an address")).toBe(false);
  });
});

// ── receipts on the router's answers ─────────────────────────────────────────────────────────────────────

const miners = new MinerSet();
afterEach(() => miners.closeAll());

const PRICE = { prompt_per_1m: 150_000, completion_per_1m: 2_500_000 };

/** The unit env with a model map that prices `model`, and a second tenant `bob`. */
function varsFor(model: string): Env {
  const modelMap = { models: [{ id: model, network_model: model, kind: "completion", price: PRICE }] };
  return { ...env, API_KEYS: "dev:dev-key,bob:bob-key-0123456789", MODEL_MAP: JSON.stringify(modelMap) } as Env;
}

async function routerSigner(vars: Env): Promise<{ signer: string; domain: Receipt["domain"] }> {
  const info = await json(await callApp(vars, "GET", "/api/v1/info"));
  const about = await json(await callApp(vars, "GET", "/api/v1/about"));
  expect(about.receipt_signer).toBe(info.receipt_signer);
  expect(about.receipt_domain).toEqual(info.receipt_domain);
  return { signer: info.receipt_signer, domain: info.receipt_domain };
}

async function servingMiner(model: string, text: string) {
  const miner = await miners.start({ models: [model], text: () => text, usage: () => ({ prompt_tokens: 9, completion_tokens: 5 }) });
  const sid = await createSession({ model });
  await miner.join(sid);
  return { miner, sid };
}

describe("receipts on the router's answers", () => {
  it("a v1 completion: verifies, names the task's miner and commitment, is priced, and is served again to its owner only", async () => {
    const model = uniq("rmodel");
    const vars = varsFor(model);
    const { miner, sid } = await servingMiner(model, "signed words");
    const { signer: routerAddress, domain } = await routerSigner(vars);
    expect(routerAddress).toBe(privateKeyToAccount(env.ROUTER_SIGNING_KEY as `0x${string}`).address);

    const res = await callApp(vars, "POST", `/api/v1/completions/${sid}`, { prompt: "Sign this", max_tokens: 8 });
    expect(res.status).toBe(200);
    const body = await json(res);
    const r: Receipt = body.receipt;
    const requestId = res.headers.get("x-request-id");
    expect(res.headers.get("x-receipt-id")).toBe(requestId);
    expect(r.request_id).toBe(requestId);
    expect(await verifyReceipt(r, routerAddress, domain)).toBe(true);

    const task = await getTask(sid, body.task_id);
    const replica = task.replicas[0];
    expect(r.tasks).toEqual([
      {
        session_id: sid,
        task_id: task.task_id,
        miners: [
          { address: miner.address, result_hash: replica.hash, commitment: replica.commitment, signature: replica.signature, agreed: true },
        ],
      },
    ]);
    expect(replica.commitment).toBe(
      commitmentHash({ session: sid, task: task.task_id, miner: miner.address as `0x${string}`, result: resultHash("signed words") }),
    );
    expect(r.output_hash).toBe(resultHash("signed words"));
    expect(r).toMatchObject({
      kind: "completion",
      model,
      session_id: sid,
      consensus: { method: "single", status: "agreed", agreed: 1, total: 1 },
    });
    expect(r.block_height).toBe(task.finished_block);

    // Cost: the model map's price × the charged usage, in the body, the header and the receipt.
    expect(r.usage).toEqual({ prompt_tokens: body.usage.prompt_tokens, completion_tokens: body.usage.completion_tokens });
    const expected = priceOf(PRICE, body.usage);
    expect(expected.total).toBeGreaterThan(0);
    expect(body.cost).toEqual(expected);
    expect(res.headers.get("x-cost")).toBe(String(expected.total));
    expect(r.price).toEqual(PRICE);
    expect(r.cost).toEqual({ unit: "micro_usd", prompt: expected.prompt, completion: expected.completion, total: expected.total });

    // Served again, byte for byte the same receipt, to its owner; to another tenant it does not exist.
    const again = await callApp(vars, "GET", `/api/v1/receipts/${requestId}`);
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual(r);
    const bob = await callApp(vars, "GET", `/api/v1/receipts/${requestId}`, undefined, "bob-key-0123456789");
    expect(bob.status).toBe(404);
    expect((await json(bob)).error.code).toBe("not_found");
    const unknown = await callApp(vars, "GET", `/api/v1/receipts/${crypto.randomUUID()}`);
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).error.code).toBe("not_found");
    const malformed = await callApp(vars, "GET", "/api/v1/receipts/..%2F..%2Fpayload");
    expect(malformed.status).toBe(400);
    const anonymous = await app.fetch(new Request(`${ORIGIN}/api/v1/receipts/${requestId}`), vars, createExecutionContext());
    expect(anonymous.status).toBe(401);
  });

  it("a streamed completion carries its receipt in the final chunk (and only there)", async () => {
    const model = uniq("rmodel");
    const vars = varsFor(model);
    const { sid } = await servingMiner(model, "streamed and signed");
    const { signer: routerAddress } = await routerSigner(vars);
    // The stream is read before the execution context is waited on: its end is what the context waits for.
    const ctx = createExecutionContext();
    const res = await app.fetch(
      new Request(`${ORIGIN}/api/v1/completions/${sid}`, {
        method: "POST",
        headers: { authorization: "Bearer dev-key", "content-type": "application/json" },
        body: JSON.stringify({ prompt: "Stream it", max_tokens: 8, stream: true }),
      }),
      vars,
      ctx,
    );
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    expect(res.headers.get("x-receipt-id")).toBe(requestId);
    const chunks = (await readSSE(res)).filter((d) => d !== "[DONE]").map((d) => JSON.parse(d));
    await waitOnExecutionContext(ctx);
    const final = chunks.at(-1);
    expect(final.choices[0].finish_reason).not.toBeNull();
    expect(chunks.slice(0, -1).every((ch) => ch.receipt === undefined)).toBe(true);
    expect(await verifyReceipt(final.receipt, routerAddress)).toBe(true);
    expect(final.receipt.request_id).toBe(requestId);
    expect(final.cost).toEqual(priceOf(PRICE, final.usage));
    expect(final.receipt.tasks[0].task_id).toBe(final.task_id);
    // Stored in the background once the final chunk is out.
    const again = await waitFor(async () => {
      const res = await callApp(vars, "GET", `/api/v1/receipts/${requestId}`);
      return res.status === 200 ? json(res) : null;
    }, "the streamed answer's receipt to be stored");
    expect(again).toEqual(final.receipt);
  });

  it("v3 completions and delegate work carry receipts too", async () => {
    const model = uniq("rmodel");
    const vars = varsFor(model);
    const { sid } = await servingMiner(model, "v3 words");
    const { signer: routerAddress } = await routerSigner(vars);
    const v3 = await callApp(vars, "POST", `/api/v3/completions/${sid}`, { prompt: "v3", max_tokens: 8 });
    expect(v3.status).toBe(200);
    const v3Body = await json(v3);
    expect(await verifyReceipt(v3Body.receipt, routerAddress)).toBe(true);
    expect(v3Body.receipt.tasks[0].task_id).toBe(v3Body.task_id);

    const delegate = await callApp(vars, "POST", "/api/v1/delegate", { task_request_input: "add 2 and 2", session_id: sid, max_tokens: 8 });
    expect(delegate.status).toBe(200);
    const d = await json(delegate);
    expect(await verifyReceipt(d.receipt, routerAddress)).toBe(true);
    expect(d.receipt).toMatchObject({ kind: "delegate", model, tasks: [{ session_id: sid, task_id: d.task_id }] });
    expect(d.cost).toEqual(priceOf(PRICE, d.receipt.usage));
    expect(delegate.headers.get("x-cost")).toBe(String(d.cost.total));
  });

  it("a receipt past PAYLOAD_RETENTION_S reads as absent and is deleted", async () => {
    const requestId = crypto.randomUUID();
    const key = receiptKey("dev", requestId);
    const old = Date.now() - 8 * 86_400_000;
    await env.PAYLOADS.put(key, JSON.stringify({ request_id: requestId }), { customMetadata: { issued_at: String(old) } });
    const res = await callApp(env, "GET", `/api/v1/receipts/${requestId}`);
    expect(res.status).toBe(404);
    expect(await env.PAYLOADS.head(key)).toBeNull();
    // Within retention the same object is served.
    await env.PAYLOADS.put(key, JSON.stringify({ request_id: requestId }), { customMetadata: { issued_at: String(Date.now()) } });
    expect((await callApp(env, "GET", `/api/v1/receipts/${requestId}`)).status).toBe(200);
  });
});
