import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { EdgeClient, VerificationError } from "../../sdk/src/index.ts";
import { deriveTaskKey, envelopeInfo, fromHex, openPayload, sealPayload, sha256Hex, toBase64 } from "../../shared/payload-crypto.ts";
import { parseUrn } from "../../shared/payloads.ts";
import type { AssignMessage } from "../../shared/protocol.ts";
import { commitmentHash, offchainResultTypedData, precommitTypedData, resultHash } from "../../shared/signing.ts";
import { api, type Miner, ROUTER_DOMAIN, type Router, startMiner, startRouter, tempDir, until } from "../helpers/network.ts";

// Private prompts sealed on the client (issue 17), against the real router (wrangler dev, local R2) and two real
// miner processes: the SDK reserves a task id with its key, seals the prompt here and sends only the envelope;
// the miners open it as they open router-sealed prompts; the SDK opens the sealed result here. Every request the
// SDK sends is recorded (its own `fetch`), so "the router never received the plaintext" is checked on the wire,
// in R2 and in the router's log. Then the adversaries: a plaintext or malformed envelope, another tenant, a
// reused, unreserved or guessed reservation, a shared session, the reservation cap, keys of other tasks.

const SEED = "3c".repeat(32);
const PAYLOAD_MAX = 65_536;
const OTHER = "other-key";

let router: Router;
let miners: Miner[] = [];
const keys = [generatePrivateKey(), generatePrivateKey()];
const addrs = keys.map((k) => privateKeyToAccount(k).address.toLowerCase());

function keyFile(pk: `0x${string}`): string {
  const file = join(tempDir("miner"), "key.json");
  const address = privateKeyToAccount(pk).address;
  writeFileSync(file, JSON.stringify({ address, private_key: pk, created_at: new Date().toISOString() }), { mode: 0o600 });
  return file;
}

async function session(id: string, key = "dev-key", miners = 0): Promise<string> {
  const res = await api(router, "/api/v1/sessions", { key, body: { session_id: id, deposit: 10_000_000, redundancy: 2, max_miners: 2 } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  if (miners)
    await until(async () => (await api(router, `/api/v1/sessions/${id}`, { key })).body.usage?.connected_miners?.length >= miners);
  return id;
}

/** Every file under the router's local R2 state, read whole. */
function r2Files(): Buffer[] {
  const out: Buffer[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(readFileSync(p));
    }
  };
  walk(join(router.persistDir, "v3", "r2"));
  return out;
}
const r2Contains = (needle: string) => r2Files().some((b) => b.includes(Buffer.from(needle, "utf8")));

const reserve = (sid: string, key = "dev-key") => api(router, `/api/v1/sessions/${sid}/reservations`, { key, body: {} });
const submit = (sid: string, body: Record<string, unknown>, key = "dev-key") =>
  api(router, `/api/v3/completions/${sid}/sealed`, { key, body: { max_tokens: 4, timeout: 30, ...body } });

/** A prompt spec sealed under a reservation's key, as the SDK seals it. */
async function sealFor(sid: string, r: { task_id: string; key: string; key_version: number }, prompt: string, taskId = r.task_id) {
  const json = new TextEncoder().encode(JSON.stringify({ prompt, prompt_type: 0 }));
  return toBase64(
    await sealPayload(fromHex(r.key), json, { scope: "task", version: r.key_version }, { kind: "prompt", sessionId: sid, taskId }),
  );
}

beforeAll(async () => {
  router = await startRouter({
    vars: {
      PAYLOAD_KEY_SEEDS: `1:${SEED}`,
      PAYLOAD_MAX_BYTES: String(PAYLOAD_MAX),
      API_KEYS: `dev:dev-key,other:${OTHER}`,
      PAYLOAD_ALLOWLIST: ["sealed", "reuse", "tenant-a"].map((sid) => `${sid}:${addrs.join(",")}`).join(";"),
    },
  });
  miners = await Promise.all(keys.map((k, i) => startMiner(router.url, { name: `S${i}`, keyFile: keyFile(k) })));
  await Promise.all(miners.map((m) => m.waitFor("ready")));
});

afterAll(async () => {
  await Promise.all(miners.map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

describe("the SDK seals a private prompt on the client", () => {
  it("sends only ciphertext, the miners answer it, and the SDK opens and verifies the result", async () => {
    const sid = await session("sealed", "dev-key", 2);
    const marker = `SEALED-MARKER-${Math.random().toString(36).slice(2, 10)}`;
    const prompt = `${marker} The secret plan for the edge network is`;
    // The answer to expect: the same prompt in the clear on another session (greedy decoding).
    await session("clear", "dev-key", 2);
    const clear = await api(router, "/api/v1/completions/clear", { body: { prompt, max_tokens: 10 } });
    expect(clear.status, JSON.stringify(clear.body)).toBe(200);
    const baseline = clear.body.choices[0].text as string;
    expect(baseline.length).toBeGreaterThan(0);
    const logBefore = router.log().length;

    const sent: { url: string; body: string }[] = [];
    const recording: typeof fetch = async (input, init) => {
      sent.push({ url: String(input), body: typeof init?.body === "string" ? init.body : "" });
      return fetch(input, init);
    };
    const client = new EdgeClient({ baseUrl: router.url, apiKey: "dev-key", fetch: recording, verify: true });
    const answer = await client.completions.create({ session_id: sid, prompt, max_tokens: 10, timeout: 60, private: true }, { version: 3 });

    expect(answer.text).toBe(baseline);
    expect(answer.choices[0].text).toBe(""); // the router answered the URN only
    expect(answer.offchain).toMatchObject({ encrypted: true, key_version: 1, result_policy: "offchain", sealed_by: "client" });
    expect(answer.miners.map((m) => m.address).sort()).toEqual([...addrs].sort());
    // On the wire: reserve, the sealed submit, the result's ciphertext (and the verifier's info); never the prompt,
    // the session key or ?decrypt=true.
    const paths = sent.map((s) => new URL(s.url).pathname);
    expect(paths).toEqual(expect.arrayContaining([`/api/v1/sessions/${sid}/reservations`, `/api/v3/completions/${sid}/sealed`]));
    expect(paths.some((p) => p.startsWith("/api/v3/offchain/result/"))).toBe(true);
    expect(paths.some((p) => p.includes("payload_enc_key"))).toBe(false);
    expect(sent.some((s) => s.url.includes("decrypt"))).toBe(false);
    expect(sent.some((s) => s.body.includes(marker))).toBe(false);
    const submitted = JSON.parse(sent.find((s) => s.url.endsWith("/sealed"))!.body);
    expect(Object.keys(submitted)).not.toContain("prompt");
    expect(envelopeInfo(Buffer.from(submitted.envelope, "base64"))).toEqual({ scope: "task", version: 1 });

    // Stored: the task carries a URN, R2 an envelope (no marker anywhere in R2), and the router logged no marker.
    const task = await api(router, `/api/v1/tasks/${sid}/${answer.task_id}`);
    expect(task.body.input.prompt).toBe("");
    expect(task.body.payload).toMatchObject({ encrypted: true, key_version: 1, result_policy: "offchain" });
    const stored = await fetch(`${router.url}/api/v3/offchain/payload/${encodeURIComponent(task.body.payload.prompt_urn)}`, {
      headers: { authorization: "Bearer dev-key" },
    });
    const bytes = new Uint8Array(await stored.arrayBuffer());
    expect(Buffer.from(bytes).toString("base64")).toBe(submitted.envelope); // exactly what the client sealed
    expect(r2Files().some((b) => b.includes(Buffer.from(`payload/${sid}/${answer.task_id}/`)))).toBe(true); // the search finds keys
    expect(r2Contains(marker)).toBe(false);
    expect(router.log().slice(logBefore)).not.toContain(marker);
    // The owner's own task key (same derivation as the miners') opens it: the miners ran this prompt.
    const k = await api(router, "/api/v1/auth/payload_enc_key/task", { body: { session_id: sid, task_id: answer.task_id } });
    const opened = await openPayload(fromHex(k.body.key), bytes, { kind: "prompt", sessionId: sid, taskId: answer.task_id });
    expect(JSON.parse(new TextDecoder().decode(opened)).prompt).toBe(prompt);
  }, 120_000);

  it("stream() of a private prompt seals it too and yields the opened answer whole", async () => {
    const marker = `STREAM-MARKER-${Math.random().toString(36).slice(2, 10)}`;
    const sent: string[] = [];
    const client = new EdgeClient({
      baseUrl: router.url,
      apiKey: "dev-key",
      verify: true,
      fetch: async (input, init) => {
        sent.push(typeof init?.body === "string" ? init.body : "");
        return fetch(input, init);
      },
    });
    const body = { session_id: "sealed", prompt: `${marker} Once upon a time`, max_tokens: 6, timeout: 60, private: true };
    const stream = client.completions.stream(body, { version: 3 });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks).toHaveLength(1);
    expect(stream.final?.offchain).toMatchObject({ sealed_by: "client", encrypted: true });
    expect(stream.textSoFar.length).toBeGreaterThan(0);
    expect(chunks[0].choices[0].text).toBe(stream.textSoFar);
    expect(sent.some((b) => b.includes(marker))).toBe(false);
    expect(sent.some((b) => b.includes('"envelope"'))).toBe(true);
  }, 120_000);

  it("`sealPromptLocally: false` sends the prompt to the router, which seals it (the old path)", async () => {
    const sent: string[] = [];
    const client = new EdgeClient({
      baseUrl: router.url,
      apiKey: "dev-key",
      fetch: async (input, init) => {
        sent.push(typeof init?.body === "string" ? init.body : "");
        return fetch(input, init);
      },
    });
    const answer = await client.completions.create(
      { session_id: "sealed", prompt: "ROUTER-SEALED the plan", max_tokens: 4, timeout: 60, private: true },
      { version: 3, sealPromptLocally: false },
    );
    expect(answer.offchain).toMatchObject({ encrypted: true });
    expect(answer.offchain).not.toHaveProperty("sealed_by");
    expect(sent.some((b) => b.includes("ROUTER-SEALED"))).toBe(true);
    expect(answer.text.length).toBeGreaterThan(0);
  }, 120_000);
});

describe("a client-sealed task's result, written by a hand-driven miner (wallet W)", () => {
  const wallet = privateKeyToAccount(generatePrivateKey());
  let token = "";
  let ws: WebSocket;
  const inbox: any[] = [];
  const asMiner = (path: string, body?: unknown) =>
    api(router, path, { key: null, headers: { authorization: `Bearer ${token}` }, ...(body ? { body } : {}) });

  beforeAll(async () => {
    const ch = await api(router, "/api/v1/miners/challenge", { key: null, body: { address: wallet.address } });
    const signature = await wallet.signMessage({ message: ch.body.message });
    const reg = await api(router, "/api/v1/miners/register", {
      key: null,
      body: { address: wallet.address, nonce: ch.body.nonce, signature, models: ["edge/tiny-gpt2"], device: "cpu", capacity: 1 },
    });
    expect(reg.status, JSON.stringify(reg.body)).toBe(200);
    token = reg.body.token;
    const s = await api(router, "/api/v1/sessions", {
      body: {
        session_id: "blind",
        deposit: 1_000_000,
        mode: "dedicated",
        dedicated_miners: [wallet.address],
        max_miners: 1,
        task_timeout: 20,
      },
    });
    expect(s.status, JSON.stringify(s.body)).toBe(201);
    const allow = await api(router, "/api/v1/auth/payload_allowlist", {
      method: "PUT",
      body: { session_id: "blind", miners: [wallet.address] },
    });
    expect(allow.status).toBe(200);
    ws = new WebSocket(`${router.url.replace("http", "ws")}/api/v1/sessions/blind/connect`, {
      headers: { authorization: `Bearer ${token}` },
    });
    ws.on("message", (d) => inbox.push(JSON.parse(String(d))));
    await until(async () => inbox.some((m) => m.type === "welcome"), 15_000, 20);
  });

  afterAll(() => ws?.close());

  it("is stored unopened with the miner's hash; a result that does not hash to it fails in the SDK", async () => {
    const client = new EdgeClient({ baseUrl: router.url, apiKey: "dev-key" });
    const pending = client.completions
      .create({ session_id: "blind", prompt: "blind prompt", max_tokens: 4, timeout: 20, private: true })
      .then(
        (a) => a,
        (e: unknown) => e,
      );
    const assign = (await until(async () => inbox.find((m) => m.type === "assign"), 15_000, 20)) as AssignMessage;
    const send = (m: unknown) => ws.send(JSON.stringify(m));
    send({ type: "ack", task_id: assign.task_id });
    expect(assign.payload).toMatchObject({ encrypted: true, sealed_by: "client", result_policy: "offchain" });
    // The miner opens the client's envelope with the task key, as it opens a router-sealed one.
    const key = fromHex((await asMiner("/api/v1/auth/payload_enc_key/task", { session_id: "blind", task_id: assign.task_id })).body.key);
    const fetched = await fetch(`${router.url}/api/v3/offchain/payload/${encodeURIComponent(assign.payload!.prompt_urn!)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const ctx = (kind: "prompt" | "result") => ({ kind, sessionId: "blind", taskId: assign.task_id });
    const spec = JSON.parse(new TextDecoder().decode(await openPayload(key, new Uint8Array(await fetched.arrayBuffer()), ctx("prompt"))));
    expect(spec).toEqual({ prompt: "blind prompt", prompt_type: 0 });

    // W seals one text and names the hash of another: a router that opened results would record the first and
    // refuse the commit; this one records what W names (it opens nothing of the task).
    const stored = await sealPayload(key, new TextEncoder().encode("what was stored"), { scope: "task", version: 1 }, ctx("result"));
    const claimed = resultHash("what was committed");
    const content_hash = `0x${await sha256Hex(stored)}` as `0x${string}`;
    const signature = await wallet.signTypedData(
      offchainResultTypedData({ session: "blind", task: assign.task_id, miner: wallet.address, content: content_hash }, ROUTER_DOMAIN),
    );
    const write = { session_id: "blind", task_id: assign.task_id, content: toBase64(stored), content_hash, signature };
    const unnamed = await asMiner("/api/v3/offchain/result", write);
    expect(unnamed.status).toBe(400);
    expect(JSON.stringify(unnamed.body.error)).toContain("result_hash");
    const written = await asMiner("/api/v3/offchain/result", { ...write, result_hash: claimed });
    expect(written.status, JSON.stringify(written.body)).toBe(201);
    expect(written.body).toMatchObject({ result_hash: claimed, encrypted: true });
    const hash = commitmentHash({ session: "blind", task: assign.task_id, miner: wallet.address, result: claimed });
    const pre = await wallet.signTypedData(
      precommitTypedData({ session: "blind", task: assign.task_id, miner: wallet.address, hash }, ROUTER_DOMAIN),
    );
    send({ type: "precommit", task_id: assign.task_id, hash, signature: pre });
    send({
      type: "commit",
      task_id: assign.task_id,
      text: "",
      result_urn: written.body.urn,
      finish_reason: "stop",
      usage: { prompt_tokens: 3, completion_tokens: 3 },
      inference_ms: 1,
    });
    const outcome = await pending;
    expect(outcome).toBeInstanceOf(VerificationError);
    expect((outcome as VerificationError).problems[0]).toContain("does not hash to what its miner committed");
    // The router's own record is W's claim: the task closed on it.
    const task = await api(router, `/api/v1/tasks/blind/${assign.task_id}`);
    expect(task.body.status).toBe("closed");
    expect(task.body.replicas[0]).toMatchObject({ result_urn: written.body.urn });
  }, 60_000);
});

describe("the sealed route refuses", () => {
  it("a plaintext prompt, a plaintext 'envelope', garbage, a session-scope or unknown-version envelope, one too large", async () => {
    const sid = await session("shape");
    const r = (await reserve(sid)).body;
    const good = await sealFor(sid, r, "fine");
    const plaintextPrompt = await submit(sid, { task_id: r.task_id, reservation: r.reservation, envelope: good, prompt: "in the clear" });
    expect(plaintextPrompt.status).toBe(400);
    expect(JSON.stringify(plaintextPrompt.body.error)).toContain("prompt");
    const json = toBase64(new TextEncoder().encode(JSON.stringify({ prompt: "in the clear, base64", prompt_type: 0 })));
    const cases: [string, number][] = [
      [json, 400],
      ["!!!not base64!!!", 400],
      [toBase64(new Uint8Array(64)), 400],
      [toBase64(Buffer.from(Buffer.from(good, "base64")).fill(1, 4, 5)), 400], // scope byte: session
      [toBase64(Buffer.from(Buffer.from(good, "base64")).fill(9, 8, 9)), 400], // key version 9: not configured
      [toBase64(new Uint8Array(PAYLOAD_MAX + 64).fill(7)), 413],
    ];
    for (const [envelope, status] of cases) {
      const res = await submit(sid, { task_id: r.task_id, reservation: r.reservation, envelope });
      expect(res.status, `${envelope.slice(0, 20)}: ${JSON.stringify(res.body)}`).toBe(status);
    }
    // A body over the route's limit is refused before it is parsed.
    const huge = await submit(sid, { task_id: r.task_id, reservation: r.reservation, envelope: "A".repeat(4 * PAYLOAD_MAX) });
    expect(huge.status).toBe(413);
    // None of those used the reservation, and nothing was stored for it.
    expect(r2Files().some((b) => b.includes(Buffer.from(`payload/${sid}/${r.task_id}/`)))).toBe(false);
    const tasks = await api(router, `/api/v1/tasks/${sid}`);
    expect(tasks.body.tasks.map((t: { task_id: string }) => t.task_id)).not.toContain(r.task_id);
  });

  it("an envelope of the right shape that opens with no key: stored, the miners cannot open it, the task fails at its timeout", async () => {
    const r = (await reserve("sealed")).body;
    const forged = Buffer.from(Buffer.from(await sealFor("sealed", r, "ok"), "base64"));
    forged.fill(0x55, 21); // header kept, ciphertext and tag replaced
    const res = await submit("sealed", { task_id: r.task_id, reservation: r.reservation, envelope: toBase64(forged), timeout: 4 });
    expect(res.status, JSON.stringify(res.body)).toBeGreaterThanOrEqual(400);
    await until(async () => miners.some((m) => m.log().includes("does not decrypt")), 10_000);
    const task = await api(router, `/api/v1/tasks/sealed/${r.task_id}`);
    expect(task.body.status).toMatch(/failed|timeout|cancelled/);
    expect(task.body.result?.text ?? "").toBe("");
  }, 60_000);

  it("another tenant: no reservation in A's session, no submit under A's id, its key opens none of A's payloads", async () => {
    const a = await session("tenant-a");
    const b = await session("tenant-b", OTHER);
    expect((await reserve(a, OTHER)).status).toBe(404);
    // A made-up session: 404 from the catalog, before any queue is made for it.
    expect((await reserve("never-made")).status).toBe(404);
    const ra = (await reserve(a)).body;
    const envelope = await sealFor(a, ra, "A's prompt");
    // B with A's id and token, in A's session: not B's session (404); in B's own session: not reserved there (409).
    const intoA = await submit(a, { task_id: ra.task_id, reservation: ra.reservation, envelope }, OTHER);
    expect(intoA.status).toBe(404);
    expect(intoA.body.error.code).toBe("session_not_found");
    const intoB = await submit(b, { task_id: ra.task_id, reservation: ra.reservation, envelope }, OTHER);
    expect(intoB.status).toBe(409);
    // B's task key (its session, the same task number) does not open A's envelope.
    const rb = (await reserve(b, OTHER)).body;
    expect(rb.key).not.toBe(ra.key);
    const sealedA = Buffer.from(envelope, "base64");
    await expect(openPayload(fromHex(rb.key), sealedA, { kind: "prompt", sessionId: a, taskId: ra.task_id })).rejects.toThrow();
    // And A's reservation is still A's to use: B's attempts burned nothing.
    const own = await submit(a, { task_id: ra.task_id, reservation: ra.reservation, envelope: await sealFor(a, ra, "x") });
    expect(own.status, JSON.stringify(own.body)).toBe(200);
    expect(own.body.offchain).toMatchObject({ sealed_by: "client", encrypted: true });
  }, 120_000);

  it("an id it did not reserve, a guessed token, a reused reservation; a shared session", async () => {
    const sid = await session("reuse");
    const r = (await reserve(sid)).body;
    expect(r).toMatchObject({ object: "sealed_reservation", session_id: sid, key_version: 1, algorithm: "AES-256-GCM" });
    expect(r.reservation).toMatch(/^[0-9a-f]{32}$/);
    expect(r.expires_at * 1000).toBeGreaterThan(Date.now() + 9 * 60_000);
    const envelope = await sealFor(sid, r, "once");
    const unreserved = String(Number(r.task_id) + 50);
    expect((await submit(sid, { task_id: unreserved, reservation: r.reservation, envelope })).status).toBe(409);
    expect((await submit(sid, { task_id: r.task_id, reservation: "0".repeat(32), envelope })).status).toBe(409);
    // The right token: the task runs, once.
    const first = await submit(sid, { task_id: r.task_id, reservation: r.reservation, envelope });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.task_id).toBe(r.task_id);
    const again = await submit(sid, { task_id: r.task_id, reservation: r.reservation, envelope });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("conflict");
    // The default session (created by its first completion) is shared by every key: it gives no reservations.
    const made = await api(router, "/api/v1/completions", { body: { prompt: "Hello", max_tokens: 2 } });
    expect(made.status, JSON.stringify(made.body)).toBe(200);
    const shared = await reserve("default");
    expect(shared.status).toBe(400);
    expect(shared.body.error.message).toContain("shared");
  }, 120_000);

  it("holds at most 256 unused reservations per session (memory only), then 429", async () => {
    const sid = await session("cap");
    const ids = new Set<string>();
    for (let i = 0; i < 256; i++) {
      const res = await reserve(sid);
      expect(res.status).toBe(201);
      ids.add(res.body.task_id);
    }
    expect(ids.size).toBe(256);
    const over = await reserve(sid);
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe("rate_limited");
    // Unused reservations wrote nothing durable: no task, no R2 object.
    const tasks = await api(router, `/api/v1/tasks/${sid}`);
    expect(tasks.body.tasks).toHaveLength(0);
    expect(r2Files().some((b) => b.includes(Buffer.from(`payload/${sid}/`)))).toBe(false);
  }, 120_000);

  it("a task key opens its own task's payloads only", async () => {
    const sid = await session("keys");
    const [r1, r2] = [(await reserve(sid)).body, (await reserve(sid)).body];
    expect(r1.task_id).not.toBe(r2.task_id);
    expect(r1.key).not.toBe(r2.key);
    const sealed1 = Buffer.from(await sealFor(sid, r1, "task one"), "base64");
    const ctx = (taskId: string) => ({ kind: "prompt" as const, sessionId: sid, taskId });
    await expect(openPayload(fromHex(r2.key), sealed1, ctx(r1.task_id))).rejects.toThrow();
    await expect(openPayload(fromHex(r1.key), sealed1, ctx(r2.task_id))).rejects.toThrow();
    expect(new TextDecoder().decode(await openPayload(fromHex(r1.key), sealed1, ctx(r1.task_id)))).toContain("task one");
    // It is the task key the hierarchy derives (session key → task), not the session key itself.
    const sk = await api(router, "/api/v1/auth/payload_enc_key/session", { body: { session_id: sid } });
    expect(r1.key).not.toBe(sk.body.key);
    expect(Buffer.from(await deriveTaskKey(fromHex(sk.body.key), sid, r1.task_id)).toString("hex")).toBe(r1.key);
    expect(parseUrn(`urn:edge:payload:${sid}:${r1.task_id}:${"0".repeat(64)}`)?.task).toBe(r1.task_id);
  });
});
