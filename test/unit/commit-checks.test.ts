import { env as workersEnv } from "cloudflare:workers";
import type { Hex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import {
  commitFault,
  inlineCommitFault,
  offchainCommitFault,
  offchainShapeFault,
  precommitSignedBy,
} from "../../durable-objects/session-queue/commit-checks.ts";
import { type PayloadDescriptor, parseUrn, promptUrn, resultUrn } from "../../shared/payloads.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { precommitTypedData, resultHash } from "../../shared/signing.ts";

// The commit-reveal checks of durable-objects/session-queue/commit-checks.ts, used for live replicas and
// stragglers alike: EIP-712 precommit signatures, inline commits, and off-chain commits against the real local
// R2 binding (objects written the way workers/lib/payload-store.ts `storeResult` writes them).

const env = workersEnv as unknown as Env;

type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

const TEXT = "The quick brown fox";
const HASH = resultHash(TEXT);
const OTHER_HASH = resultHash("something else");

const OFFCHAIN: PayloadDescriptor = { encrypted: false, result_policy: "offchain", inline_limit: 0 };
const PRIVATE: PayloadDescriptor = { encrypted: true, key_version: 1, result_policy: "offchain", inline_limit: 0 };
const INLINE_PAYLOAD: PayloadDescriptor = { prompt_bytes: 12, encrypted: false, result_policy: "inline", inline_limit: 4096 };

let counter = 0;
/** A fresh session id and task id, so stored objects never collide across tests. */
function scopeFor(miner: string): { session: string; task: string; miner: string } {
  counter++;
  return { session: `cc-${crypto.randomUUID().slice(0, 8)}`, task: String(100 + counter), miner };
}

const wallet = (): PrivateKeyAccount => privateKeyToAccount(generatePrivateKey());

async function signPrecommit(
  signer: PrivateKeyAccount,
  fields: { session: string; task: string; miner: Hex; hash: Hex },
): Promise<Precommit> {
  const signature = await signer.signTypedData(precommitTypedData(fields));
  return { type: "precommit", task_id: fields.task, hash: fields.hash, signature };
}

function commit(text: string, result_urn?: string): Commit {
  return {
    type: "commit",
    task_id: "1",
    text,
    finish_reason: "stop",
    usage: { prompt_tokens: 3, completion_tokens: 4 },
    inference_ms: 5,
    ...(result_urn === undefined ? {} : { result_urn }),
  };
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Stores a result the way the router's `storeResult` does and returns its URN. */
async function storeResult(
  scope: { session: string; task: string; miner: string },
  content: string,
  metadata: Record<string, string> | null = { result_hash: resultHash(content) },
): Promise<string> {
  const bytes = new TextEncoder().encode(content);
  const urn = resultUrn(scope.session, scope.task, scope.miner, await sha256Hex(bytes));
  await env.PAYLOADS.put(
    parseUrn(urn)!.key,
    bytes,
    metadata ? { customMetadata: { ...metadata, miner: scope.miner.toLowerCase(), encrypted: "0" } } : {},
  );
  return urn;
}

// ── precommit signatures ─────────────────────────────────────────────────────────────────────────────────

describe("precommitSignedBy", () => {
  it("accepts a precommit signed by the miner that sends it, whatever the address case", async () => {
    const me = wallet();
    const msg = await signPrecommit(me, { session: "s1", task: "7", miner: me.address, hash: HASH });
    expect(await precommitSignedBy("s1", me.address, msg)).toBe(true);
    expect(await precommitSignedBy("s1", me.address.toLowerCase(), msg)).toBe(true);
  });

  it("refuses a signature by another key naming this miner (wrong key)", async () => {
    const me = wallet();
    const other = wallet();
    const msg = await signPrecommit(other, { session: "s1", task: "7", miner: me.address, hash: HASH });
    expect(await precommitSignedBy("s1", me.address, msg)).toBe(false);
  });

  it("refuses another miner's valid precommit replayed by this miner", async () => {
    const honest = wallet();
    const replayer = wallet();
    const msg = await signPrecommit(honest, { session: "s1", task: "7", miner: honest.address, hash: HASH });
    expect(await precommitSignedBy("s1", honest.address, msg)).toBe(true);
    expect(await precommitSignedBy("s1", replayer.address, msg)).toBe(false);
  });

  it("refuses a signature replayed onto another session, task or hash", async () => {
    const me = wallet();
    const msg = await signPrecommit(me, { session: "s1", task: "7", miner: me.address, hash: HASH });
    expect(await precommitSignedBy("s2", me.address, msg)).toBe(false);
    expect(await precommitSignedBy("s1", me.address, { ...msg, task_id: "8" })).toBe(false);
    expect(await precommitSignedBy("s1", me.address, { ...msg, hash: OTHER_HASH })).toBe(false);
  });

  it("refuses malformed signatures without throwing", async () => {
    const me = wallet();
    const msg = await signPrecommit(me, { session: "s1", task: "7", miner: me.address, hash: HASH });
    for (const signature of ["0x", "0x1234", `0x${"00".repeat(65)}`, "not hex at all", `${msg.signature}00`]) {
      expect(await precommitSignedBy("s1", me.address, { ...msg, signature })).toBe(false);
    }
  });
});

// ── commit shape and inline commits ──────────────────────────────────────────────────────────────────────

describe("offchainShapeFault", () => {
  const urn = resultUrn("s1", "1", "0x00000000000000000000000000000000000000aa", "ab".repeat(32));

  it("has nothing to say about an inline commit", () => {
    expect(offchainShapeFault(undefined, commit(TEXT))).toBeNull();
    expect(offchainShapeFault(OFFCHAIN, commit(TEXT))).toBeNull();
  });

  it("refuses a URN on a task without a payload descriptor", () => {
    expect(offchainShapeFault(undefined, commit("", urn))).toBe("this task takes inline results only");
  });

  it("refuses a URN that also carries text", () => {
    expect(offchainShapeFault(OFFCHAIN, commit(TEXT, urn))).toBe("an off-chain commit must not carry text");
    expect(offchainShapeFault(PRIVATE, commit("x", urn))).toBe("an off-chain commit must not carry text");
  });

  it("accepts a URN with empty text on a payload task", () => {
    expect(offchainShapeFault(OFFCHAIN, commit("", urn))).toBeNull();
    expect(offchainShapeFault(PRIVATE, commit("", urn))).toBeNull();
    expect(offchainShapeFault(INLINE_PAYLOAD, commit("", urn))).toBeNull();
  });
});

describe("inlineCommitFault", () => {
  it("accepts text hashing to the precommit", () => {
    expect(inlineCommitFault(undefined, HASH, TEXT)).toBeNull();
    expect(inlineCommitFault(INLINE_PAYLOAD, HASH, TEXT)).toBeNull();
    expect(inlineCommitFault(undefined, resultHash(""), "")).toBeNull();
  });

  it("refuses text that does not hash to the precommit, or a commit without a precommit", () => {
    expect(inlineCommitFault(undefined, OTHER_HASH, TEXT)).toBe("commit does not match the precommitted hash");
    expect(inlineCommitFault(undefined, HASH, `${TEXT} `)).toBe("commit does not match the precommitted hash");
    expect(inlineCommitFault(undefined, null, TEXT)).toBe("commit does not match the precommitted hash");
  });

  it("refuses a private task's result inline, even when it matches", () => {
    expect(inlineCommitFault(PRIVATE, HASH, TEXT)).toBe("a private task's result must be committed as an encrypted off-chain URN");
  });
});

// ── off-chain commits against R2 ─────────────────────────────────────────────────────────────────────────

describe("offchainCommitFault", () => {
  it("accepts this replica's stored result whose plaintext hash is the precommit", async () => {
    const me = wallet();
    const scope = scopeFor(me.address);
    const urn = await storeResult(scope, TEXT);
    expect(await offchainCommitFault(env.PAYLOADS, scope, urn, HASH)).toBeNull();
    // the scope may name the miner checksummed; URNs are lowercase
    expect(await offchainCommitFault(env.PAYLOADS, { ...scope, miner: me.address.toLowerCase() }, urn, HASH)).toBeNull();
  });

  it("refuses a URN naming another miner, task or session, or not a result URN", async () => {
    const me = wallet();
    const other = wallet();
    const scope = scopeFor(me.address);
    const notMine = "result URN does not name this replica's result";
    // each of these objects exists and matches the hash: only the name is wrong
    const otherMiner = await storeResult({ ...scope, miner: other.address }, TEXT);
    const otherTask = await storeResult({ ...scope, task: String(Number(scope.task) + 1) }, TEXT);
    const otherSession = await storeResult({ ...scope, session: `${scope.session}x` }, TEXT);
    expect(await offchainCommitFault(env.PAYLOADS, scope, otherMiner, HASH)).toBe(notMine);
    expect(await offchainCommitFault(env.PAYLOADS, scope, otherTask, HASH)).toBe(notMine);
    expect(await offchainCommitFault(env.PAYLOADS, scope, otherSession, HASH)).toBe(notMine);
    expect(await offchainCommitFault(env.PAYLOADS, scope, promptUrn(scope.session, scope.task, "ab".repeat(32)), HASH)).toBe(notMine);
    expect(await offchainCommitFault(env.PAYLOADS, scope, "urn:edge:result:garbage", HASH)).toBe(notMine);
    // and the same objects are fine for their own replicas
    expect(await offchainCommitFault(env.PAYLOADS, { ...scope, miner: other.address }, otherMiner, HASH)).toBeNull();
  });

  it("refuses a well-formed URN of this replica that names no stored object", async () => {
    const scope = scopeFor(wallet().address);
    const urn = resultUrn(scope.session, scope.task, scope.miner, "cd".repeat(32));
    expect(await offchainCommitFault(env.PAYLOADS, scope, urn, HASH)).toBe("result URN names no stored object");
  });

  it("refuses a stored result whose hash is not the precommit (or that has none)", async () => {
    const scope = scopeFor(wallet().address);
    const mismatch = "stored result does not match the precommitted hash";
    const urn = await storeResult(scope, TEXT);
    expect(await offchainCommitFault(env.PAYLOADS, scope, urn, OTHER_HASH)).toBe(mismatch);
    expect(await offchainCommitFault(env.PAYLOADS, scope, urn, null)).toBe(mismatch);
    // an object stored with another plaintext hash than its URN's replica precommitted
    const lying = await storeResult(scope, "other text", { result_hash: OTHER_HASH });
    expect(await offchainCommitFault(env.PAYLOADS, scope, lying, HASH)).toBe(mismatch);
    const bare = await storeResult(scope, "no metadata", null);
    expect(await offchainCommitFault(env.PAYLOADS, scope, bare, HASH)).toBe(mismatch);
    expect(await offchainCommitFault(env.PAYLOADS, scope, bare, null)).toBe(mismatch);
  });
});

describe("commitFault", () => {
  it("the good cases: inline text matching the precommit, or this replica's matching stored result", async () => {
    const scope = scopeFor(wallet().address);
    expect(await commitFault(env.PAYLOADS, scope, undefined, HASH, commit(TEXT))).toBeNull();
    expect(await commitFault(env.PAYLOADS, scope, INLINE_PAYLOAD, HASH, commit(TEXT))).toBeNull();
    const urn = await storeResult(scope, TEXT);
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, HASH, commit("", urn))).toBeNull();
    expect(await commitFault(env.PAYLOADS, scope, PRIVATE, HASH, commit("", urn))).toBeNull();
  });

  it("inline faults: hash mismatch, private task", async () => {
    const scope = scopeFor(wallet().address);
    expect(await commitFault(env.PAYLOADS, scope, undefined, HASH, commit("tampered"))).toBe("commit does not match the precommitted hash");
    expect(await commitFault(env.PAYLOADS, scope, PRIVATE, HASH, commit(TEXT))).toBe(
      "a private task's result must be committed as an encrypted off-chain URN",
    );
  });

  it("the shape comes first: a URN on a task without payload, or with text, fails even when the object matches", async () => {
    const scope = scopeFor(wallet().address);
    const urn = await storeResult(scope, TEXT);
    expect(await commitFault(env.PAYLOADS, scope, undefined, HASH, commit("", urn))).toBe("this task takes inline results only");
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, HASH, commit(TEXT, urn))).toBe("an off-chain commit must not carry text");
  });

  it("off-chain faults: another replica's URN, a missing object, a mismatching stored hash", async () => {
    const scope = scopeFor(wallet().address);
    const otherMiner = await storeResult({ ...scope, miner: wallet().address }, TEXT);
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, HASH, commit("", otherMiner))).toBe(
      "result URN does not name this replica's result",
    );
    const missing = resultUrn(scope.session, scope.task, scope.miner, "ef".repeat(32));
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, HASH, commit("", missing))).toBe("result URN names no stored object");
    const urn = await storeResult(scope, TEXT);
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, OTHER_HASH, commit("", urn))).toBe(
      "stored result does not match the precommitted hash",
    );
    // an off-chain commit is judged by its stored object, never by an inline hash of its (empty) text
    expect(await commitFault(env.PAYLOADS, scope, OFFCHAIN, resultHash(""), commit("", urn))).toBe(
      "stored result does not match the precommitted hash",
    );
  });
});
