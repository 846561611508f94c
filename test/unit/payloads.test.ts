import { evictDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { deriveSessionKey, deriveTaskKey, envelopeInfo, fromHex, openPayload, sealPayload, toHex } from "../../shared/payload-crypto.ts";
import { parseUrn, promptUrn, resultUrn } from "../../shared/payloads.ts";
import { minerAllowed, parseAllowlist, parseSeeds, taskKey, writeStoredAllowlist } from "../../workers/lib/payload-keys.ts";
import { decryptObject } from "../../workers/lib/payload-store.ts";
import {
  API_KEY,
  api,
  createSession,
  env,
  getTask,
  json,
  MinerSet,
  ORIGIN,
  poolStub,
  sessionStub,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

// Payload crypto, keys, rotation and allowlists, inside the Workers runtime (WebCrypto as the router runs it).

const SEED1 = "11".repeat(32);
const SEED2 = "22".repeat(32);
const enc = new TextEncoder();
const dec = new TextDecoder();
const withSeeds = (seeds: string): Env => ({ ...env, PAYLOAD_KEY_SEEDS: seeds });

describe("key derivation", () => {
  it("derives stable, distinct keys per session and per task, task keys from the session key", async () => {
    const seed = fromHex(SEED1);
    const a = await deriveSessionKey(seed, "s1");
    expect(toHex(a)).toBe(toHex(await deriveSessionKey(seed, "s1")));
    expect(a).toHaveLength(32);
    expect(toHex(a)).not.toBe(toHex(await deriveSessionKey(seed, "s2")));
    expect(toHex(a)).not.toBe(toHex(await deriveSessionKey(fromHex(SEED2), "s1")));
    const t1 = await deriveTaskKey(a, "s1", "1");
    expect(toHex(t1)).not.toBe(toHex(await deriveTaskKey(a, "s1", "2")));
    expect(toHex(t1)).not.toBe(toHex(a));
    // What the router hands out is what a session-key holder derives locally.
    const routerTask = await taskKey(withSeeds(`1:${SEED1}`), "s1", "1");
    expect(routerTask.version).toBe(1);
    expect(toHex(routerTask.key)).toBe(toHex(t1));
  });

  it("parses versioned seeds, encrypts with the highest and refuses malformed ones", () => {
    const seeds = parseSeeds(`1:${SEED1}, 3:0x${SEED2}`);
    expect([...seeds.keys()].sort()).toEqual([1, 3]);
    expect(() => parseSeeds("1:abcd")).toThrow(/16 seed bytes/);
    expect(() => parseSeeds(`x:${SEED1}`)).toThrow();
    expect(parseSeeds("").size).toBe(0);
  });
});

describe("envelope", () => {
  const ctx = { kind: "prompt" as const, sessionId: "s1", taskId: "7" };

  it("round-trips and carries the key version in its header", async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const sealed = await sealPayload(key, enc.encode("secret prompt"), { scope: "task", version: 42 }, ctx);
    expect(envelopeInfo(sealed)).toEqual({ scope: "task", version: 42 });
    expect(dec.decode(sealed)).not.toContain("secret prompt");
    expect(dec.decode(await openPayload(key, sealed, ctx))).toBe("secret prompt");
    // Fresh IV every time: the same plaintext never seals to the same bytes.
    expect(toHex(await sealPayload(key, enc.encode("secret prompt"), { scope: "task", version: 42 }, ctx))).not.toBe(toHex(sealed));
  });

  it("refuses a flipped bit, another key, another task or the other kind", async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const sealed = await sealPayload(key, enc.encode("secret"), { scope: "task", version: 1 }, ctx);
    const flipped = sealed.slice();
    flipped[flipped.length - 1] ^= 1;
    await expect(openPayload(key, flipped, ctx)).rejects.toThrow(/does not decrypt/);
    const header = sealed.slice();
    header[8] ^= 1; // the version is authenticated too
    await expect(openPayload(key, header, ctx)).rejects.toThrow(/does not decrypt/);
    await expect(openPayload(crypto.getRandomValues(new Uint8Array(32)), sealed, ctx)).rejects.toThrow();
    await expect(openPayload(key, sealed, { ...ctx, taskId: "8" })).rejects.toThrow();
    await expect(openPayload(key, sealed, { ...ctx, kind: "result" })).rejects.toThrow();
    await expect(openPayload(key, enc.encode("plain text, not an envelope at all"), ctx)).rejects.toThrow(/not a payload envelope/);
  });

  it("still opens old payloads after a seed rotation, and not once the old seed is gone", async () => {
    const old = withSeeds(`1:${SEED1}`);
    const rotated = withSeeds(`1:${SEED1},2:${SEED2}`);
    const k1 = await taskKey(old, "rot", "5");
    const urn = parseUrn(promptUrn("rot", "5", "ab".repeat(32)))!;
    const sealed = await sealPayload(
      k1.key,
      enc.encode("before rotation"),
      { scope: "task", version: k1.version },
      { kind: "prompt", sessionId: "rot", taskId: "5" },
    );
    // After rotation new payloads use version 2 …
    expect((await taskKey(rotated, "rot", "5")).version).toBe(2);
    // … and version-1 envelopes still open, because the envelope names its version.
    expect(dec.decode(await decryptObject(rotated, urn, sealed))).toBe("before rotation");
    await expect(decryptObject(withSeeds(`2:${SEED2}`), urn, sealed)).rejects.toThrow(/no payload key version 1/);
  });
});

describe("URNs and allowlists", () => {
  it("parses only our URNs and maps them to R2 keys", () => {
    const sha = "0f".repeat(32);
    expect(parseUrn(promptUrn("my-sess", "12", sha))).toEqual({
      kind: "prompt",
      session: "my-sess",
      task: "12",
      sha256: sha,
      key: `payload/my-sess/12/${sha}`,
    });
    const r = parseUrn(resultUrn("s", "3", "0x" + "AB".repeat(20), sha));
    expect(r).toMatchObject({ kind: "result", session: "s", task: "3", miner: "0x" + "ab".repeat(20) });
    expect(parseUrn(`urn:edge:payload:s/../x:1:${sha}`)).toBeNull();
    expect(parseUrn(`urn:edge:payload:s:1:${sha.slice(2)}`)).toBeNull();
    expect(parseUrn("urn:other:thing")).toBeNull();
  });

  it("parses `sid:addr,addr;sid-tid:addr` and merges what owners stored", async () => {
    const a = "0x" + "aa".repeat(20);
    const b = "0x" + "BB".repeat(20);
    const c = "0x" + "cc".repeat(20);
    const table = parseAllowlist(`s1:${a}, ${b};s1-7:${c};bad;s2:not-an-address`);
    expect([...table.get("s1")!]).toEqual([a, b.toLowerCase()]);
    expect([...table.get("s1-7")!]).toEqual([c]);
    expect(table.get("s2")!.size).toBe(0);

    const sid = uniq("acl");
    const e: Env = { ...env, PAYLOAD_ALLOWLIST: `${sid}:${a};${sid}-7:${c}` };
    expect(await minerAllowed(e, sid, null, a)).toBe(true);
    expect(await minerAllowed(e, sid, "3", a.toUpperCase().replace("0X", "0x"))).toBe(true);
    expect(await minerAllowed(e, sid, "7", c)).toBe(true);
    expect(await minerAllowed(e, sid, "8", c)).toBe(false); // a task entry opens that task only
    expect(await minerAllowed(e, sid, null, c)).toBe(false);
    expect(await minerAllowed(e, sid, null, b)).toBe(false);
    await writeStoredAllowlist(e, sid, { session: [b.toLowerCase()], tasks: { "9": [c] } });
    expect(await minerAllowed(e, sid, null, b)).toBe(true);
    expect(await minerAllowed(e, sid, "9", c)).toBe(true);
  });
});

const router = (exports as unknown as { default: Fetcher }).default;
const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("routes", () => {
  it("v2/v3 completions need an API key; key routes refuse unknown credentials", async () => {
    for (const path of ["/api/v2/completions", "/api/v3/completions/x"]) {
      const res = await router.fetch(`${ORIGIN}${path}`, {
        method: "POST",
        body: JSON.stringify({ prompt: "hi" }),
        headers: { "content-type": "application/json" },
      });
      expect(res.status, path).toBe(401);
    }
    const res = await api("POST", "/auth/payload_enc_key/session", { session_id: "default" }, { key: "nope" });
    expect(res.status).toBe(401);
  });

  it("a shared session (owner *) takes no private tasks and hands out no keys or allowlists", async () => {
    const model = uniq("model");
    const shared = uniq("shared");
    const config = { ...(await sessionStub(await createSession({ model })).describe())!.config, id: shared, owner: "*" };
    const made = await sessionStub(shared).init(config);
    expect(made.ok).toBe(true);
    await poolStub().addSession(config); // in the catalog, as the router's shared sessions are
    const res = await router.fetch(`${ORIGIN}/api/v3/completions/${shared}`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "secret", private: true }),
    });
    expect(res.status).toBe(400);
    expect((await json<{ error: { details: { path: string }[] } }>(res)).error.details[0].path).toBe("private");
    const key = await api("POST", "/auth/payload_enc_key/session", { session_id: shared });
    expect(key.status).toBe(403);
    expect((await json<{ error: { code: string } }>(key)).error.code).toBe("forbidden");
    const acl = await api("PUT", "/auth/payload_allowlist", { session_id: shared, miners: ["0x" + "11".repeat(20)] });
    expect(acl.status).toBe(403);
  });
});

describe("SessionQueue side", () => {
  it("an off-chain task's assign carries only its URN, survives an eviction, and holdsTask names its holder", async () => {
    const model = uniq("model");
    const miner = await miners.start({
      models: [model],
      behaviour: "hold",
      text: () => "held answer",
      usage: () => ({ prompt_tokens: 1, completion_tokens: 2 }),
    });
    const sid = await createSession({ model });
    await miner.join(sid);
    const ac = new AbortController();
    const pending = router
      .fetch(`${ORIGIN}/api/v2/completions/${sid}`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ prompt: "kept off-chain", payload_policy: "offchain", max_tokens: 4 }),
        signal: ac.signal,
      })
      .catch(() => null);
    const a = await miner.nextAssign(sid);
    expect(a.input.prompt).toBe("");
    expect(a.payload).toMatchObject({ encrypted: false, result_policy: "inline" });
    expect(parseUrn(a.payload!.prompt_urn!)).toMatchObject({ kind: "prompt", session: sid, task: a.task_id });
    await waitForStatus(sid, a.task_id, "acked");
    ac.abort();
    await pending;

    const queue = sessionStub(sid);
    expect(await queue.holdsTask(a.task_id, miner.address.toUpperCase().replace("0X", "0x"))).toEqual({ held: true, payload: a.payload });
    expect((await queue.holdsTask(a.task_id, "0x" + "00".repeat(20))).held).toBe(false);
    expect((await queue.holdsTask("999", miner.address)).held).toBe(false);

    await evictDurableObject(queue, { webSockets: "hibernate" });
    // The restored object re-sends the assign (acks live in memory) with the same descriptor.
    const again = await waitFor(() => miner.repeats.find((r) => r.task_id === a.task_id), "the re-sent assign");
    expect(again.payload).toEqual(a.payload);
    expect((await sessionStub(sid).holdsTask(a.task_id, miner.address)).held).toBe(true);
    await miner.finish(sid, a.task_id);
    const task = await waitForStatus(sid, a.task_id, "closed");
    expect(task.payload).toEqual(a.payload);
    expect(task.input.prompt).toBe("");
  });

  it("refuses an off-chain commit on an inline task, or one that also carries text", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model });
    await miner.join(sid);
    const text = "the honest answer";
    const urn = `urn:edge:result:${sid}:1:${miner.address.toLowerCase()}:${"ab".repeat(32)}`;

    // v1 (no payload descriptor): a URN commit would hide unchecked text behind a checked object.
    const v1 = api("POST", `/completions/${sid}`, { prompt: "p", max_tokens: 4, timeout: 5 });
    const a = await miner.nextAssign(sid);
    miner.ack(sid, a.task_id);
    await miner.precommit(sid, a.task_id, text);
    await waitForStatus(sid, a.task_id, "precommitted");
    miner.send(sid, {
      type: "commit",
      task_id: a.task_id,
      text: "forged text",
      result_urn: urn.replace(":1:", `:${a.task_id}:`),
      finish_reason: "stop",
      usage: { prompt_tokens: 1, completion_tokens: 2 },
      inference_ms: 1,
    });
    const t1 = await waitFor(async () => {
      const t = await getTask(sid, a.task_id);
      return t.replicas[0]?.state === "rejected" ? t : null;
    }, "the URN commit to be rejected");
    expect(t1.replicas[0].reason).toMatch(/inline results only/);
    await v1;

    // v2 with an off-chain result: the commit's text must be empty (the text is what R2 holds).
    const v2 = router.fetch(`${ORIGIN}/api/v2/completions/${sid}`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "q", max_tokens: 4, result_policy: "offchain", timeout: 5 }),
    });
    const b = await miner.nextAssign(sid, 1);
    expect(b.payload?.result_policy).toBe("offchain");
    miner.ack(sid, b.task_id);
    await miner.precommit(sid, b.task_id, text);
    await waitForStatus(sid, b.task_id, "precommitted");
    miner.send(sid, {
      type: "commit",
      task_id: b.task_id,
      text: "forged text",
      result_urn: urn.replace(":1:", `:${b.task_id}:`),
      finish_reason: "stop",
      usage: { prompt_tokens: 1, completion_tokens: 2 },
      inference_ms: 1,
    });
    const t2 = await waitFor(async () => {
      const t = await getTask(sid, b.task_id);
      return t.replicas[0]?.state === "rejected" ? t : null;
    }, "the text-carrying URN commit to be rejected");
    expect(t2.replicas[0].reason).toMatch(/must not carry text/);
    await v2;
  });

  it("reserves task ids for their owner only, and refuses a submit under an id it does not hold", async () => {
    const model = uniq("model");
    const sid = await createSession({ model });
    await (await miners.start({ models: [model] })).join(sid);
    const queue = sessionStub(sid);
    expect(await queue.reserveTaskId("someone-else")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await sessionStub(uniq("none")).reserveTaskId("dev")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    const r = await queue.reserveTaskId("dev");
    if (!r.ok) throw new Error("reservation failed");
    const req = {
      input: { prompt: "x", prompt_type: 0 as const },
      params: { max_tokens: 1, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [] },
      stream: false,
      owner: "dev",
    };
    expect(await queue.submit({ ...req, task_id: r.task_id + 1 })).toMatchObject({ ok: false, error: { code: "conflict" } });
    // After an eviction the reservation is gone (memory only): the router stores again under a fresh id.
    await evictDurableObject(queue);
    expect(await sessionStub(sid).submit({ ...req, task_id: r.task_id })).toMatchObject({ ok: false, error: { code: "conflict" } });
    const fresh = await sessionStub(sid).reserveTaskId("dev");
    expect(fresh.ok && fresh.task_id).toBe(r.task_id); // nothing was written under it, so the id is free again
  });

  it("answers 400 for a private inline prompt and an inline prompt over the limit", async () => {
    const post = (body: unknown) =>
      router.fetch(`${ORIGIN}/api/v3/completions/default`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const priv = await post({ prompt: "x", private: true, payload_policy: "inline" });
    expect(priv.status).toBe(400);
    expect((await json(priv)).error.details[0].path).toBe("payload_policy");
    const big = await post({ prompt: "y".repeat(70_000), payload_policy: "inline" });
    expect(big.status).toBe(400);
  });
});
