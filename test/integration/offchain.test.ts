import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { deriveTaskKey, fromHex, openPayload, sha256Hex, toBase64, toHex } from "../../shared/payload-crypto.ts";
import { parseUrn } from "../../shared/payloads.ts";
import type { AssignMessage } from "../../shared/protocol.ts";
import { commitmentHash, offchainResultTypedData, precommitTypedData, registrationMessage, resultHash } from "../../shared/signing.ts";
import { api, type Miner, ROUTER_DOMAIN, type Router, sse, startMiner, startRouter, tempDir, until } from "../helpers/network.ts";

// Off-chain and private payloads end to end: the real router (wrangler dev, real local R2), two real miner
// processes (A and B, keys made here so the allowlist can name them) and, for the wire-level cases, a
// hand-driven miner (wallet W) that speaks the session protocol itself.

const SEED1 = "5a".repeat(32);
const SEED2 = "a5".repeat(32);
const INLINE_LIMIT = 512;
const SENTENCE = "The edge network stores large prompts off-chain in object storage and hands miners a URN instead. ";

let router: Router;
let minerA: Miner;
let minerB: Miner;
const keyA = generatePrivateKey();
const keyB = generatePrivateKey();
const addrA = privateKeyToAccount(keyA).address.toLowerCase();
const addrB = privateKeyToAccount(keyB).address.toLowerCase();
const wallet = privateKeyToAccount(generatePrivateKey());
const addrW = wallet.address.toLowerCase();

function keyFile(pk: `0x${string}`): string {
  const file = join(tempDir("miner"), "key.json");
  writeFileSync(file, JSON.stringify({ address: privateKeyToAccount(pk).address, private_key: pk, created_at: new Date().toISOString() }), {
    mode: 0o600,
  });
  return file;
}

async function session(body: Record<string, unknown>, miners: number): Promise<string> {
  const res = await api(router, "/api/v1/sessions", { body: { deposit: 100_000_000, ...body } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  if (miners > 0) {
    await until(async () => (await api(router, `/api/v1/sessions/${res.body.id}`)).body.usage?.connected_miners?.length >= miners, 30_000);
  }
  return res.body.id as string;
}

/** Every file under the router's local R2 state (blobs and metadata), read whole. */
function r2Files(): Buffer[] {
  const root = join(router.persistDir, "v3", "r2");
  const out: Buffer[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(readFileSync(p));
    }
  };
  walk(root);
  return out;
}
const r2Contains = (needle: string) => r2Files().some((b) => b.includes(Buffer.from(needle, "utf8")));

/** Registers wallet W through the REST API, as a miner would, and returns its token. */
async function registerW(): Promise<string> {
  const ch = await api(router, "/api/v1/miners/challenge", { key: null, body: { address: wallet.address } });
  expect(ch.body.message).toBe(registrationMessage(wallet.address, ch.body.nonce, ch.body.router));
  const signature = await wallet.signMessage({ message: ch.body.message });
  const reg = await api(router, "/api/v1/miners/register", {
    key: null,
    body: { address: wallet.address, nonce: ch.body.nonce, signature, models: ["edge/tiny-gpt2"], device: "cpu", capacity: 1 },
  });
  expect(reg.status, JSON.stringify(reg.body)).toBe(200);
  return reg.body.token as string;
}

/** A call with a miner token instead of an API key. */
function asMiner(token: string, path: string, init: { method?: string; body?: unknown } = {}) {
  return api(router, path, { ...init, key: null, headers: { authorization: `Bearer ${token}` } });
}

async function signedWrite(
  signer: PrivateKeyAccount,
  token: string,
  sid: string,
  tid: string,
  content: Uint8Array,
  claimedMiner = wallet.address,
) {
  const content_hash = `0x${await sha256Hex(content)}` as `0x${string}`;
  const signature = await signer.signTypedData(
    offchainResultTypedData({ session: sid, task: tid, miner: claimedMiner, content: content_hash }, ROUTER_DOMAIN),
  );
  return asMiner(token, "/api/v3/offchain/result", {
    body: { session_id: sid, task_id: tid, content: toBase64(content), content_hash, signature },
  });
}

beforeAll(async () => {
  router = await startRouter({
    vars: {
      INLINE_PAYLOAD_LIMIT: String(INLINE_LIMIT),
      PAYLOAD_KEY_SEEDS: `1:${SEED1},2:${SEED2}`,
      PAYLOAD_ALLOWLIST: `priv:${addrA},${addrB};denied:${addrA}`,
      API_KEYS: "dev:dev-key,other:other-key",
    },
  });
  [minerA, minerB] = await Promise.all([
    startMiner(router.url, { name: "A", keyFile: keyFile(keyA) }),
    startMiner(router.url, { name: "B", keyFile: keyFile(keyB) }),
  ]);
  await Promise.all([minerA.waitFor("ready"), minerB.waitFor("ready")]);
  expect(minerA.address()!.toLowerCase()).toBe(addrA);
});

afterAll(async () => {
  await Promise.all([minerA, minerB].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

let bigPromptUrn = "";
let bigTaskId = "";

describe("off-chain prompts", () => {
  it("sends a prompt over the inline limit through R2 and gets the same answer as inline", async () => {
    const sid = await session({ session_id: "big", redundancy: 2, max_miners: 2 }, 2);
    const prompt = SENTENCE.repeat(10); // ~980 bytes, ~410 tokens: over the 512-byte limit, inside the model's 512 positions
    const inline = await api(router, `/api/v1/completions/${sid}`, { body: { prompt, max_tokens: 8 } });
    expect(inline.status, JSON.stringify(inline.body)).toBe(200);

    const res = await api(router, `/api/v2/completions/${sid}`, { body: { prompt, max_tokens: 8 } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.offchain.prompt_urn).toMatch(new RegExp(`^urn:edge:payload:big:${res.body.task_id}:[0-9a-f]{64}$`));
    expect(res.body.offchain).toMatchObject({ encrypted: false, result_policy: "inline", result_urn: null });
    expect(res.body.choices[0].text).toBe(inline.body.choices[0].text);
    expect(res.body.consensus).toMatchObject({ status: "agreed", outliers: [] });
    expect(res.body.miners).toHaveLength(2);
    bigPromptUrn = res.body.offchain.prompt_urn;
    bigTaskId = res.body.task_id;

    // The task carries only the URN; the stored object is the prompt, content-addressed.
    const task = await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`);
    expect(task.body.input.prompt).toBe("");
    expect(task.body.payload).toMatchObject({ prompt_urn: bigPromptUrn, encrypted: false });
    const stored = await fetch(`${router.url}/api/v3/offchain/payload/${encodeURIComponent(bigPromptUrn)}`, {
      headers: { authorization: "Bearer dev-key" },
    });
    expect(stored.status).toBe(200);
    const bytes = new Uint8Array(await stored.arrayBuffer());
    expect(await sha256Hex(bytes)).toBe(parseUrn(bigPromptUrn)!.sha256);
    expect(JSON.parse(new TextDecoder().decode(bytes)).prompt).toBe(prompt);

    // Under the limit the v2 prompt stays inline.
    const small = await api(router, `/api/v2/completions/${sid}`, { body: { prompt: "A short prompt", max_tokens: 4 } });
    expect(small.status).toBe(200);
    expect(small.body.offchain.prompt_urn).toBeNull();
  });

  it("accepts a 1 MiB prompt on v3 (v1 refuses it), stores it whole and the miners fetch it", async () => {
    const prompt = "x".repeat(1024 * 1024);
    // The built-in model has 512 positions and the engine refuses longer inputs, so the template leaves the
    // document out of what the model reads; the miners still fetch and hash-check the whole payload.
    const body = { prompt, prompt_template: "Summarize the attached document:", max_tokens: 4 };
    const v1 = await api(router, "/api/v1/completions/big", { body });
    expect(v1.status).toBe(413);
    expect(v1.body.error.code).toBe("payload_too_large");
    const res = await api(router, "/api/v3/completions/big", { body });
    expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(200);
    expect(res.body.miners).toHaveLength(2);
    const task = await api(router, `/api/v1/tasks/big/${res.body.task_id}`);
    expect(task.body.payload.prompt_bytes).toBeGreaterThan(1024 * 1024);
    const stored = await fetch(`${router.url}/api/v3/offchain/payload/${encodeURIComponent(res.body.offchain.prompt_urn)}`, {
      headers: { authorization: "Bearer dev-key" },
    });
    expect(JSON.parse(await stored.text()).prompt).toBe(prompt);
  });

  it("streams a non-encrypted v2 completion with an off-chain prompt", async () => {
    const prompt = SENTENCE.repeat(9) + "Streaming";
    const whole = await api(router, "/api/v1/completions/big", { body: { prompt, max_tokens: 8 } });
    const streamed = await sse(router, "/api/v2/completions/big", { prompt, max_tokens: 8, stream: true });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get("content-type")).toContain("text/event-stream");
    expect(streamed.events.at(-1)).toBe("[DONE]");
    const chunks = streamed.events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(whole.body.choices[0].text);
    expect(chunks.at(-1).offchain.prompt_urn).toMatch(/^urn:edge:payload:big:/);
  });
});

describe("private payloads", () => {
  let privSid = "";
  const marker = `PRIVATE-MARKER-${Math.random().toString(36).slice(2, 10)}`;
  const prompt = `${marker} The secret plan for the edge network is`;
  let baseline = "";
  const texts: string[] = [];

  beforeAll(async () => {
    privSid = await session({ session_id: "priv", redundancy: 2, max_miners: 2 }, 2);
    // The same prompt in the clear, elsewhere: greedy decoding makes it the answer to expect.
    const plain = await api(router, "/api/v1/completions/big", { body: { prompt, max_tokens: 12 } });
    baseline = plain.body.choices[0].text;
    expect(baseline.length).toBeGreaterThan(0);
  });

  it("answers inline for the owner while R2 holds only ciphertext", async () => {
    const res = await api(router, `/api/v3/completions/${privSid}`, {
      body: { prompt, max_tokens: 12, private: true, result_policy: "inline" },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.choices[0].text).toBe(baseline);
    expect(res.body.offchain).toMatchObject({ encrypted: true, key_version: 2, result_policy: "inline" });
    expect(res.body.offchain.result_urn).toMatch(new RegExp(`^urn:edge:result:priv:${res.body.task_id}:0x[0-9a-f]{40}:[0-9a-f]{64}$`));
    expect(res.body.consensus).toMatchObject({ status: "agreed" });
    texts.push(res.body.choices[0].text);
  });

  it("returns a result URN by default; the client opens it with its task key (or the session key)", async () => {
    const res = await api(router, `/api/v3/completions/${privSid}`, { body: { prompt, max_tokens: 12, private: true } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.choices[0].text).toBe("");
    const urn = res.body.offchain.result_urn as string;
    const tid = res.body.task_id as string;
    const raw = await fetch(`${router.url}/api/v3/offchain/result/${encodeURIComponent(urn)}`, {
      headers: { authorization: "Bearer dev-key" },
    });
    expect(raw.status).toBe(200);
    expect(raw.headers.get("x-payload-encrypted")).toBe("1");
    expect(raw.headers.get("x-payload-key-version")).toBe("2");
    const sealed = new Uint8Array(await raw.arrayBuffer());
    expect(Buffer.from(sealed).includes(Buffer.from(baseline))).toBe(false);

    const taskKey = await api(router, "/api/v1/auth/payload_enc_key/task", { body: { session_id: privSid, task_id: tid } });
    expect(taskKey.status).toBe(200);
    expect(taskKey.body).toMatchObject({ scope: "task", key_version: 2, algorithm: "AES-256-GCM" });
    const text = new TextDecoder().decode(
      await openPayload(fromHex(taskKey.body.key), sealed, { kind: "result", sessionId: privSid, taskId: tid }),
    );
    expect(text).toBe(baseline);
    const sessionKey = await api(router, "/api/v1/auth/payload_enc_key/session", { body: { session_id: privSid } });
    expect(toHex(await deriveTaskKey(fromHex(sessionKey.body.key), privSid, tid))).toBe(taskKey.body.key);
    const decrypted = await api(router, `/api/v3/offchain/result/${encodeURIComponent(urn)}?decrypt=true`);
    expect(decrypted.body).toBe(baseline);

    // Another API key (another owner) gets neither the result nor its key: to it the session does not exist.
    const other = await api(router, `/api/v3/offchain/result/${encodeURIComponent(urn)}`, { key: "other-key" });
    expect(other.status).toBe(404);
    expect(other.body.error.code).toBe("session_not_found");
    const otherKey = await api(router, "/api/v1/auth/payload_enc_key/task", {
      key: "other-key",
      body: { session_id: privSid, task_id: tid },
    });
    expect(otherKey.status).toBe(404);
    expect(otherKey.body.error.code).toBe("session_not_found");
  });

  it("answers an encrypted stream request whole, flagged as not streamed", async () => {
    const res = await fetch(`${router.url}/api/v3/completions/${privSid}`, {
      method: "POST",
      headers: { authorization: "Bearer dev-key", "content-type": "application/json" },
      body: JSON.stringify({ prompt, max_tokens: 12, private: true, stream: true, result_policy: "inline" }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(res.headers.get("x-streaming-disabled")).toBe("encrypted-payload");
    const body = (await res.json()) as any;
    expect(body.streaming_disabled).toBe(true);
    expect(body.choices[0].text).toBe(baseline);
  });

  it("makes every task of a session whose metadata says private: true private", async () => {
    const sid = await session({ session_id: "privmeta", redundancy: 1, max_miners: 2, metadata: { private: true } }, 2);
    const put = await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: sid, miners: [addrA, addrB] } });
    expect(put.status).toBe(200);
    const res = await api(router, `/api/v2/completions/${sid}`, { body: { prompt, max_tokens: 12, result_policy: "inline" } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.offchain).toMatchObject({ encrypted: true, key_version: 2 });
    expect(res.body.choices[0].text).toBe(baseline);
    texts.push(res.body.choices[0].text);
    const open = await api(router, `/api/v2/completions/${sid}`, { body: { prompt, max_tokens: 12, private: false } });
    expect(open.status).toBe(400);
    expect(open.body.error.details[0].path).toBe("private");
  });

  it("never shows a private task's outputs to validators: differing samples are judged on their hashes", async () => {
    // best_effort: two differing hashes are no quorum, so only a session that opted in gets an answer (flagged).
    const sid = await session({ session_id: "privsim", redundancy: 2, max_miners: 2, consensus: "similarity", best_effort: true }, 2);
    const put = await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: sid, miners: [addrA, addrB] } });
    expect(put.status).toBe(200);
    // A similarity session samples each replica with its own seed: the two outputs differ.
    const res = await api(router, `/api/v3/completions/${sid}`, {
      body: { prompt, max_tokens: 24, temperature: 1, private: true, result_policy: "inline" },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.consensus).toMatchObject({ method: "exact", status: "no_quorum", best_effort: true });
    expect(res.body.consensus.note).toMatch(/not shown to validators/);
    expect(res.body.consensus.similarity).toBeUndefined();
    texts.push(res.body.choices[0].text);
  });

  it("leaves no plaintext byte of a private prompt or result in R2", async () => {
    expect(r2Files().length).toBeGreaterThan(0);
    // The scan sees stored objects: the non-private off-chain prompt is there in the clear…
    expect(r2Contains(SENTENCE.repeat(3))).toBe(true);
    // …and nothing of the private ones: not the prompt, not the results.
    expect(r2Contains(marker)).toBe(false);
    expect(r2Contains("The secret plan")).toBe(false);
    for (const t of texts) if (t.trim().length >= 6) expect(r2Contains(t)).toBe(false);
  });
});

describe("allowlist", () => {
  it("refuses a miner outside the allowlist a key (logged, audited) until the owner adds it", async () => {
    const sid = await session({ session_id: "denied", redundancy: 1, mode: "dedicated", dedicated_miners: [addrB], max_miners: 1 }, 1);
    const refused = await api(router, `/api/v3/completions/${sid}`, {
      body: { prompt: "Only A may read this", max_tokens: 4, private: true, timeout: 6 },
    });
    expect(refused.status).toBe(504);
    const ev = await minerB.waitFor("payload_refused", (e) => e.session_id === sid, 5_000);
    expect(ev.status).toBe(403);
    expect(router.log()).toMatch(new RegExp(`payload audit: refused payload_key for miner ${addrB} on denied`));
    const audit = await api(router, `/api/v1/auth/payload_audit/${sid}`);
    expect(audit.body.entries).toEqual(
      expect.arrayContaining([expect.objectContaining({ miner: addrB, action: "payload_key", outcome: "refused" })]),
    );
    const task = await api(router, `/api/v1/tasks/${sid}/${refused.body.error.details.task_id}`);
    expect(task.body.replicas[0]).toMatchObject({ miner: addrB, state: "released" });

    // Only the owner sets the allowlist (to another key the session is unknown); then B gets the key and the task runs.
    expect(
      (await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", key: "other-key", body: { session_id: sid, miners: [addrB] } }))
        .status,
    ).toBe(404);
    const put = await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: sid, miners: [addrB] } });
    expect(put.status).toBe(200);
    expect(put.body.session).toEqual([addrA, addrB].sort());
    const ok = await api(router, `/api/v3/completions/${sid}`, {
      body: { prompt: "Only A may read this", max_tokens: 4, private: true, result_policy: "inline" },
    });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.miners[0].address).toBe(addrB);
  });
});

describe("the off-chain wire, driven by hand (wallet W)", () => {
  let token = "";
  let ws: WebSocket;
  const inbox: any[] = [];
  const nextAssign = () =>
    until(async () => inbox.find((m) => m.type === "assign" && !m.taken && (m.taken = true)) as AssignMessage | undefined, 15_000, 20);
  const send = (m: unknown) => ws.send(JSON.stringify(m));

  beforeAll(async () => {
    token = await registerW();
    await session({ session_id: "wire", redundancy: 1, mode: "dedicated", dedicated_miners: [addrW], max_miners: 1, task_timeout: 20 }, 0);
    ws = new WebSocket(`${router.url.replace("http", "ws")}/api/v1/sessions/wire/connect`, {
      headers: { authorization: `Bearer ${token}` },
    });
    ws.on("message", (d) => inbox.push(JSON.parse(String(d))));
    await until(async () => inbox.some((m) => m.type === "welcome"), 15_000, 20);
  });

  afterAll(() => ws?.close());

  it("fetches its own task's prompt, is refused other sessions' URNs and forged writes, and commits a URN", async () => {
    const pending = api(router, "/api/v2/completions/wire", { body: { prompt: "wire prompt", payload_policy: "offchain", max_tokens: 4 } });
    const assign = await nextAssign();
    send({ type: "ack", task_id: assign.task_id });
    expect(assign.input.prompt).toBe("");
    const urn = assign.payload!.prompt_urn!;
    expect(parseUrn(urn)).toMatchObject({ session: "wire", task: assign.task_id });

    const mine = await asMiner(token, `/api/v3/offchain/payload/${encodeURIComponent(urn)}`);
    expect(mine.status).toBe(200);
    expect(mine.body.prompt).toBe("wire prompt");
    // A URN of another session (a real task of session `big`), and one naming another task: refused.
    expect(bigPromptUrn).not.toBe("");
    const foreign = await asMiner(token, `/api/v3/offchain/payload/${encodeURIComponent(bigPromptUrn)}`);
    expect(foreign.status).toBe(403);
    expect(foreign.body.error.code).toBe("forbidden");
    const otherTask = urn.replace(`:wire:${assign.task_id}:`, `:wire:${Number(assign.task_id) + 100}:`);
    expect((await asMiner(token, `/api/v3/offchain/payload/${encodeURIComponent(otherTask)}`)).status).toBe(403);

    const text = "a hand-made answer";
    const content = new TextEncoder().encode(text);
    // Forged: signed by another key for W's address; for a task W does not hold; content not matching its hash.
    const forger = privateKeyToAccount(generatePrivateKey());
    const forged = await signedWrite(forger, token, "wire", assign.task_id, content);
    expect(forged.status).toBe(403);
    expect(forged.body.error.message).toMatch(/signature/);
    const notMine = await signedWrite(wallet, token, "big", bigTaskId, content);
    expect(notMine.status).toBe(403);
    const honest = await signedWrite(wallet, token, "wire", assign.task_id, content);
    expect(honest.status).toBe(201);
    const bad = await asMiner(token, "/api/v3/offchain/result", {
      body: {
        session_id: "wire",
        task_id: assign.task_id,
        content: toBase64(new TextEncoder().encode("other")),
        content_hash: `0x${await sha256Hex(content)}`,
        signature: "0x00",
      },
    });
    expect(bad.status).toBe(400);
    // Refusals are audited.
    const audit = await api(router, "/api/v1/auth/payload_audit/wire");
    expect(audit.body.entries.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(["payload_fetch", "result_write"]));
    const stored = honest.body;
    expect(stored).toMatchObject({ result_hash: resultHash(text), encrypted: false });

    const hash = commitmentHash({ session: "wire", task: assign.task_id, miner: wallet.address, result: resultHash(text) });
    const signature = await wallet.signTypedData(
      precommitTypedData({ session: "wire", task: assign.task_id, miner: wallet.address, hash }, ROUTER_DOMAIN),
    );
    send({ type: "precommit", task_id: assign.task_id, hash, signature });
    send({
      type: "commit",
      task_id: assign.task_id,
      text: "",
      result_urn: stored.urn,
      finish_reason: "stop",
      usage: { prompt_tokens: 3, completion_tokens: 4 },
      inference_ms: 1,
    });
    const res = await pending;
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.choices[0].text).toBe(text);
    expect(res.body.offchain.result_urn).toBe(stored.urn);
  });

  it("rejects a commit whose stored result does not hash to the precommit", async () => {
    const pending = api(router, "/api/v2/completions/wire", {
      body: { prompt: "second wire prompt", max_tokens: 4, result_policy: "offchain", timeout: 5 },
    });
    const assign = await nextAssign();
    send({ type: "ack", task_id: assign.task_id });
    const written = await signedWrite(wallet, token, "wire", assign.task_id, new TextEncoder().encode("what was stored"));
    expect(written.status).toBe(201);
    const hash = commitmentHash({
      session: "wire",
      task: assign.task_id,
      miner: wallet.address,
      result: resultHash("what was precommitted"),
    });
    const signature = await wallet.signTypedData(
      precommitTypedData({ session: "wire", task: assign.task_id, miner: wallet.address, hash }, ROUTER_DOMAIN),
    );
    send({ type: "precommit", task_id: assign.task_id, hash, signature });
    send({
      type: "commit",
      task_id: assign.task_id,
      text: "",
      result_urn: written.body.urn,
      finish_reason: "stop",
      usage: { prompt_tokens: 3, completion_tokens: 4 },
      inference_ms: 1,
    });
    const res = await pending;
    expect(res.status).toBe(504);
    const task = await api(router, `/api/v1/tasks/wire/${assign.task_id}`);
    expect(task.body.replicas[0]).toMatchObject({ state: "rejected", reason: "stored result does not match the precommitted hash" });
  });

  it("gives a holder outside the allowlist only ciphertext, and rejects a private result committed inline", async () => {
    const secret = "wire secret that must not leak";
    const pending = api(router, "/api/v3/completions/wire", { body: { prompt: secret, private: true, max_tokens: 4, timeout: 5 } });
    const assign = await nextAssign();
    send({ type: "ack", task_id: assign.task_id });
    expect(assign.payload).toMatchObject({ encrypted: true, result_policy: "offchain" });
    const fetched = await fetch(`${router.url}/api/v3/offchain/payload/${encodeURIComponent(assign.payload!.prompt_urn!)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(fetched.status).toBe(200);
    expect(fetched.headers.get("x-payload-encrypted")).toBe("1");
    expect(Buffer.from(await fetched.arrayBuffer()).includes(Buffer.from("wire secret"))).toBe(false);
    const key = await asMiner(token, "/api/v1/auth/payload_enc_key/task", { body: { session_id: "wire", task_id: assign.task_id } });
    expect(key.status).toBe(403);

    const text = "plaintext over the socket";
    const hash = commitmentHash({ session: "wire", task: assign.task_id, miner: wallet.address, result: resultHash(text) });
    const signature = await wallet.signTypedData(
      precommitTypedData({ session: "wire", task: assign.task_id, miner: wallet.address, hash }, ROUTER_DOMAIN),
    );
    send({ type: "precommit", task_id: assign.task_id, hash, signature });
    send({
      type: "commit",
      task_id: assign.task_id,
      text,
      finish_reason: "stop",
      usage: { prompt_tokens: 3, completion_tokens: 4 },
      inference_ms: 1,
    });
    expect((await pending).status).toBe(504);
    const task = await api(router, `/api/v1/tasks/wire/${assign.task_id}`);
    expect(task.body.replicas[0].state).toBe("rejected");
    expect(task.body.replicas[0].reason).toMatch(/encrypted off-chain URN/);
    expect(task.body.results.data).toEqual([]);
  });

  it("refuses a miner outside the allowlist a key and logs it", async () => {
    const res = await asMiner(token, "/api/v1/auth/payload_enc_key/task", { body: { session_id: "priv", task_id: "1" } });
    expect(res.status).toBe(403);
    const s = await asMiner(token, "/api/v1/auth/payload_enc_key/session", { body: { session_id: "priv" } });
    expect(s.status).toBe(403);
    const audit = await api(router, "/api/v1/auth/payload_audit/priv");
    expect(audit.body.entries.filter((e: { miner: string }) => e.miner === addrW)).toHaveLength(2);
  });
});
