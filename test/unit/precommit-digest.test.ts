import { type Hex, hashTypedData, keccak256 } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { precommitSignedBy } from "../../durable-objects/session-queue/commit-checks.ts";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { precommitDigest, precommitTypedData, type SigningDomain, signingDomain } from "../../shared/signing.ts";

// The hot-path precommit digest (shared/signing.ts `precommitDigest`, domain separator cached per domain) must be
// exactly EIP-712's: the miner signs it directly and the SessionQueue recovers from it, while any other EIP-712
// signer (a hardware wallet, viem's signTypedData) must keep producing signatures the router accepts.

const A: SigningDomain = signingDomain({ name: "edge-inference-router", chain_id: 31337, address: null });
const B: SigningDomain = signingDomain({
  name: "edge-inference-router",
  chain_id: 31337,
  address: "0x00000000000000000000000000000000000000b2",
});
const C: SigningDomain = signingDomain({ name: "another-router", chain_id: 1, address: null });
type Precommit = Extract<SessionMinerMessage, { type: "precommit" }>;

describe("precommit digest with a cached domain separator", () => {
  it("equals viem's EIP-712 hashTypedData for every domain, and domains never share a cached separator", () => {
    const miner = privateKeyToAccount(generatePrivateKey()).address;
    for (let i = 0; i < 5; i++) {
      const fields = { session: `s-${i}`, task: String(i + 1), miner, hash: keccak256(`0x0${i}`) };
      // Each domain twice: the second call is served from the cache.
      for (const d of [A, B, C, A, B, C]) expect(precommitDigest(fields, d)).toBe(hashTypedData(precommitTypedData(fields, d)));
      expect(new Set([A, B, C].map((d) => precommitDigest(fields, d))).size).toBe(3);
    }
  });

  it("a signature of the digest is the same as signTypedData's, is accepted, and is refused for another domain or miner", async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const other = privateKeyToAccount(generatePrivateKey());
    const fields = { session: "default", task: "7", miner: account.address, hash: keccak256("0x77") };
    const direct = await account.sign({ hash: precommitDigest(fields, A) });
    expect(direct).toBe(await account.signTypedData(precommitTypedData(fields, A)));
    const msg: Precommit = { type: "precommit", task_id: "7", hash: fields.hash, signature: direct };
    expect(await precommitSignedBy("default", account.address, msg, A)).toBe(true);
    expect(await precommitSignedBy("default", account.address, msg, B)).toBe(false);
    expect(await precommitSignedBy("other-session", account.address, msg, A)).toBe(false);
    expect(await precommitSignedBy("default", other.address, msg, A)).toBe(false);
    const forged: Precommit = { ...msg, signature: (await other.sign({ hash: precommitDigest(fields, A) })) as Hex };
    expect(await precommitSignedBy("default", account.address, forged, A)).toBe(false);
    expect(await precommitSignedBy("default", account.address, { ...msg, signature: "0x1234" }, A)).toBe(false);
  });
});
