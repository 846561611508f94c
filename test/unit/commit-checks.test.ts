import { env as workersEnv } from "cloudflare:workers";
import type { Hex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { deploymentDomain } from "../../durable-objects/deployment.ts";
import {
  type CommitScope,
  inlineReveal,
  offchainReveal,
  offchainShapeFault,
  precommitSignedBy,
  revealCommit,
} from "../../durable-objects/session-queue/commit-checks.ts";
import type { OpenTask } from "../../durable-objects/session-queue/task.ts";
import { type PayloadDescriptor, parseUrn, promptUrn, resultUrn } from "../../shared/payloads.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitTypedData, resultHash, type SigningDomain, signingDomain } from "../../shared/signing.ts";

// The commit-reveal checks of durable-objects/session-queue/commit-checks.ts, used for live replicas and
// stragglers alike: EIP-712 precommit signatures, inline commits, and off-chain commits against the real local
// R2 binding (objects written the way workers/lib/payload-store.ts `storeResult` writes them). A commit reveals
// what its miner committed to: shared/signing.ts `commitmentHash` over session, task, miner and result hash.

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

/** This deployment's signing domain (the unit pool's ROUTER_NAME and CHAIN_ID). */
const DOMAIN = deploymentDomain(env);

async function signPrecommit(
  signer: PrivateKeyAccount,
  fields: { session: string; task: string; miner: Hex; hash: Hex },
  domain: SigningDomain = DOMAIN,
): Promise<Precommit> {
  const signature = await signer.signTypedData(precommitTypedData(fields, domain));
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
    expect(await precommitSignedBy("s1", me.address, msg, DOMAIN)).toBe(true);
    expect(await precommitSignedBy("s1", me.address.toLowerCase(), msg, DOMAIN)).toBe(true);
  });

  it("refuses a signature by another key naming this miner (wrong key)", async () => {
    const me = wallet();
    const other = wallet();
    const msg = await signPrecommit(other, { session: "s1", task: "7", miner: me.address, hash: HASH });
    expect(await precommitSignedBy("s1", me.address, msg, DOMAIN)).toBe(false);
  });

  it("refuses another miner's valid precommit replayed by this miner", async () => {
    const honest = wallet();
    const replayer = wallet();
    const msg = await signPrecommit(honest, { session: "s1", task: "7", miner: honest.address, hash: HASH });
    expect(await precommitSignedBy("s1", honest.address, msg, DOMAIN)).toBe(true);
    expect(await precommitSignedBy("s1", replayer.address, msg, DOMAIN)).toBe(false);
  });

  it("refuses a signature replayed onto another session, task or hash", async () => {
    const me = wallet();
    const msg = await signPrecommit(me, { session: "s1", task: "7", miner: me.address, hash: HASH });
    expect(await precommitSignedBy("s2", me.address, msg, DOMAIN)).toBe(false);
    expect(await precommitSignedBy("s1", me.address, { ...msg, task_id: "8" }, DOMAIN)).toBe(false);
    expect(await precommitSignedBy("s1", me.address, { ...msg, hash: OTHER_HASH }, DOMAIN)).toBe(false);
  });

  it("refuses a precommit signed for another deployment (other chain, router address or name)", async () => {
    const me = wallet();
    const fields = { session: "s1", task: "7", miner: me.address, hash: HASH };
    expect(await precommitSignedBy("s1", me.address, await signPrecommit(me, fields), DOMAIN)).toBe(true);
    const elsewhere = [
      signingDomain({ name: DOMAIN.name, chain_id: DOMAIN.chainId + 1, address: null }),
      signingDomain({ name: DOMAIN.name, chain_id: DOMAIN.chainId, address: `0x${"11".repeat(20)}` }),
      signingDomain({ name: "another-router", chain_id: DOMAIN.chainId, address: null }),
    ];
    for (const other of elsewhere)
      expect(await precommitSignedBy("s1", me.address, await signPrecommit(me, fields, other), DOMAIN)).toBe(false);
  });

  it("refuses malformed signatures without throwing", async () => {
    const me = wallet();
    const msg = await signPrecommit(me, { session: "s1", task: "7", miner: me.address, hash: HASH });
    for (const signature of ["0x", "0x1234", `0x${"00".repeat(65)}`, "not hex at all", `${msg.signature}00`]) {
      expect(await precommitSignedBy("s1", me.address, { ...msg, signature }, DOMAIN)).toBe(false);
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

/** What the scope's miner precommits for `text`. */
const committed = (scope: CommitScope, text: string): Hex =>
  commitmentHash({ session: scope.session, task: scope.task, miner: scope.miner as Hex, result: resultHash(text) });

const revealed = (text: string) => ({ ok: true, hash: resultHash(text) });
const refused = (fault: string) => ({ ok: false, fault });

/** A task as revealCommit reads it: its payload, its max_tokens (text bound 64 bytes a token), a 20-byte prompt. */
const taskWith = (payload?: PayloadDescriptor, max_tokens = 16) =>
  ({ assign: { payload, params: { max_tokens } }, promptBytes: 20 }) as unknown as Pick<OpenTask, "assign" | "promptBytes">;

describe("inlineReveal", () => {
  const scope = { session: "s1", task: "7", miner: "0x00000000000000000000000000000000000000aa" };

  it("reveals text matching this miner's commitment, and its plain result hash", () => {
    expect(inlineReveal(undefined, scope, committed(scope, TEXT), TEXT)).toEqual(revealed(TEXT));
    expect(inlineReveal(INLINE_PAYLOAD, scope, committed(scope, TEXT), TEXT)).toEqual(revealed(TEXT));
    expect(inlineReveal(undefined, scope, committed(scope, ""), "")).toEqual(revealed(""));
    // hex case does not matter
    expect(inlineReveal(undefined, scope, committed(scope, TEXT).toUpperCase().replace("0X", "0x"), TEXT)).toEqual(revealed(TEXT));
  });

  it("refuses text that is not what was committed, or a commit without a commitment", () => {
    const mismatch = refused("commit does not match the precommitted hash");
    expect(inlineReveal(undefined, scope, committed(scope, "something else"), TEXT)).toEqual(mismatch);
    expect(inlineReveal(undefined, scope, committed(scope, TEXT), `${TEXT} `)).toEqual(mismatch);
    expect(inlineReveal(undefined, scope, null, TEXT)).toEqual(mismatch);
  });

  it("binds the miner, session and task: the bare result hash or another replica's commitment is refused", () => {
    const mismatch = refused("commit does not match the precommitted hash");
    expect(inlineReveal(undefined, scope, HASH, TEXT)).toEqual(mismatch);
    const other = { ...scope, miner: "0x00000000000000000000000000000000000000bb" };
    expect(committed(other, TEXT)).not.toBe(committed(scope, TEXT));
    expect(inlineReveal(undefined, scope, committed(other, TEXT), TEXT)).toEqual(mismatch);
    expect(inlineReveal(undefined, scope, committed({ ...scope, task: "8" }, TEXT), TEXT)).toEqual(mismatch);
    expect(inlineReveal(undefined, scope, committed({ ...scope, session: "s2" }, TEXT), TEXT)).toEqual(mismatch);
  });

  it("refuses a private task's result inline, even when it matches", () => {
    expect(inlineReveal(PRIVATE, scope, committed(scope, TEXT), TEXT)).toEqual(
      refused("a private task's result must be committed as an encrypted off-chain URN"),
    );
  });
});

// ── off-chain commits against R2 ─────────────────────────────────────────────────────────────────────────

const BIG = 1_000_000;

describe("offchainReveal", () => {
  it("reveals this replica's stored result whose plaintext hash it committed to", async () => {
    const me = wallet();
    const scope = scopeFor(me.address);
    const urn = await storeResult(scope, TEXT);
    expect(await offchainReveal(env.PAYLOADS, scope, urn, committed(scope, TEXT), BIG)).toEqual(revealed(TEXT));
    // the scope may name the miner checksummed or not; URNs are lowercase
    const lower = { ...scope, miner: me.address.toLowerCase() };
    expect(await offchainReveal(env.PAYLOADS, lower, urn, committed(scope, TEXT), BIG)).toEqual(revealed(TEXT));
  });

  it("refuses a URN naming another miner, task or session, or not a result URN", async () => {
    const me = wallet();
    const other = wallet();
    const scope = scopeFor(me.address);
    const notMine = refused("result URN does not name this replica's result");
    const c = committed(scope, TEXT);
    // each of these objects exists and matches the text: only the name is wrong
    const otherMiner = await storeResult({ ...scope, miner: other.address }, TEXT);
    const otherTask = await storeResult({ ...scope, task: String(Number(scope.task) + 1) }, TEXT);
    const otherSession = await storeResult({ ...scope, session: `${scope.session}x` }, TEXT);
    expect(await offchainReveal(env.PAYLOADS, scope, otherMiner, c, BIG)).toEqual(notMine);
    expect(await offchainReveal(env.PAYLOADS, scope, otherTask, c, BIG)).toEqual(notMine);
    expect(await offchainReveal(env.PAYLOADS, scope, otherSession, c, BIG)).toEqual(notMine);
    expect(await offchainReveal(env.PAYLOADS, scope, promptUrn(scope.session, scope.task, "ab".repeat(32)), c, BIG)).toEqual(notMine);
    expect(await offchainReveal(env.PAYLOADS, scope, "urn:edge:result:garbage", c, BIG)).toEqual(notMine);
    // and the other miner's object is fine for its own replica, under its own commitment
    const theirs = { ...scope, miner: other.address };
    expect(await offchainReveal(env.PAYLOADS, theirs, otherMiner, committed(theirs, TEXT), BIG)).toEqual(revealed(TEXT));
  });

  it("refuses a well-formed URN of this replica that names no stored object", async () => {
    const scope = scopeFor(wallet().address);
    const urn = resultUrn(scope.session, scope.task, scope.miner, "cd".repeat(32));
    expect(await offchainReveal(env.PAYLOADS, scope, urn, committed(scope, TEXT), BIG)).toEqual(
      refused("result URN names no stored object"),
    );
  });

  it("refuses a stored result it did not commit to (or that has no hash), and one past the task's text bound", async () => {
    const scope = scopeFor(wallet().address);
    const mismatch = refused("stored result does not match the precommitted hash");
    const urn = await storeResult(scope, TEXT);
    expect(await offchainReveal(env.PAYLOADS, scope, urn, committed(scope, "something else"), BIG)).toEqual(mismatch);
    expect(await offchainReveal(env.PAYLOADS, scope, urn, HASH, BIG)).toEqual(mismatch);
    expect(await offchainReveal(env.PAYLOADS, scope, urn, null, BIG)).toEqual(mismatch);
    // an object stored with another plaintext hash than its URN's replica committed to
    const lying = await storeResult(scope, "other text", { result_hash: OTHER_HASH });
    expect(await offchainReveal(env.PAYLOADS, scope, lying, committed(scope, TEXT), BIG)).toEqual(mismatch);
    const bare = await storeResult(scope, "no metadata", null);
    expect(await offchainReveal(env.PAYLOADS, scope, bare, committed(scope, "no metadata"), BIG)).toEqual(mismatch);
    const long = "x".repeat(200);
    const big = await storeResult(scope, long);
    expect(await offchainReveal(env.PAYLOADS, scope, big, committed(scope, long), 100)).toEqual(refused("stored result exceeds 100 bytes"));
    expect(await offchainReveal(env.PAYLOADS, scope, big, committed(scope, long), 200)).toEqual(revealed(long));
  });
});

describe("revealCommit", () => {
  it("the good cases: inline text it committed to, or this replica's matching stored result", async () => {
    const scope = scopeFor(wallet().address);
    const c = committed(scope, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(), c, commit(TEXT))).toEqual(revealed(TEXT));
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(INLINE_PAYLOAD), c, commit(TEXT))).toEqual(revealed(TEXT));
    const urn = await storeResult(scope, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), c, commit("", urn))).toEqual(revealed(TEXT));
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(PRIVATE), c, commit("", urn))).toEqual(revealed(TEXT));
  });

  it("inline faults: not what was committed, private task", async () => {
    const scope = scopeFor(wallet().address);
    const c = committed(scope, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(), c, commit("tampered"))).toEqual(
      refused("commit does not match the precommitted hash"),
    );
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(PRIVATE), c, commit(TEXT))).toEqual(
      refused("a private task's result must be committed as an encrypted off-chain URN"),
    );
  });

  it("the shape comes first: a URN on a task without payload, or with text, fails even when the object matches", async () => {
    const scope = scopeFor(wallet().address);
    const urn = await storeResult(scope, TEXT);
    const c = committed(scope, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(), c, commit("", urn))).toEqual(refused("this task takes inline results only"));
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), c, commit(TEXT, urn))).toEqual(
      refused("an off-chain commit must not carry text"),
    );
  });

  it("bounds before the commitment: text past 64 bytes a token, usage past max_tokens or the prompt's bytes", async () => {
    const scope = scopeFor(wallet().address);
    const long = "y".repeat(65);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(undefined, 1), committed(scope, long), commit(long))).toEqual(
      refused("commit text exceeds 64 bytes (64 per token of max_tokens 1)"),
    );
    const at = "y".repeat(64);
    expect(
      await revealCommit(env.PAYLOADS, scope, taskWith(undefined, 1), committed(scope, at), {
        ...commit(at),
        usage: { prompt_tokens: 3, completion_tokens: 1 },
      }),
    ).toEqual(revealed(at));
    const c = committed(scope, TEXT);
    const inflated = { ...commit(TEXT), usage: { prompt_tokens: 2 ** 53 - 1, completion_tokens: 4 } };
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(), c, inflated)).toEqual(
      refused(`usage claims ${2 ** 53 - 1} prompt tokens; a 20-byte prompt allows 4116`),
    );
    const more = { ...commit(TEXT), usage: { prompt_tokens: 3, completion_tokens: 17 } };
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(), c, more)).toEqual(
      refused("usage claims 17 completion tokens; the task allows 16"),
    );
  });

  it("off-chain faults: another replica's URN, a missing object, a stored result it did not commit to", async () => {
    const scope = scopeFor(wallet().address);
    const c = committed(scope, TEXT);
    const otherMiner = await storeResult({ ...scope, miner: wallet().address }, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), c, commit("", otherMiner))).toEqual(
      refused("result URN does not name this replica's result"),
    );
    const missing = resultUrn(scope.session, scope.task, scope.miner, "ef".repeat(32));
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), c, commit("", missing))).toEqual(
      refused("result URN names no stored object"),
    );
    const urn = await storeResult(scope, TEXT);
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), committed(scope, "else"), commit("", urn))).toEqual(
      refused("stored result does not match the precommitted hash"),
    );
    // an off-chain commit is judged by its stored object, never by its (empty) inline text
    expect(await revealCommit(env.PAYLOADS, scope, taskWith(OFFCHAIN), committed(scope, ""), commit("", urn))).toEqual(
      refused("stored result does not match the precommitted hash"),
    );
  });
});
