import { secp256k1 } from "@noble/curves/secp256k1";
import { type Hex, keccak256, recoverAddress, toHex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { signedBy } from "../../durable-objects/session-queue/signer-keys.ts";

// Precommit signatures checked against a miner's cached public key (issue 18) must accept exactly what recovery
// accepts: the same key, the same v. A signature with another v recovers to another address, and a stored one is
// slashing evidence for an on-chain ecrecover, so the fast check may not be more lenient than recovery.

const N = secp256k1.CURVE.n;
const hex64 = (x: bigint) => x.toString(16).padStart(64, "0");

/** The variants of a signature an attacker could send: v flipped, s negated, both, v as 0/1, another digest's. */
function variants(sig: Hex, other: Hex): Hex[] {
  const r = sig.slice(2, 66);
  const s = BigInt(`0x${sig.slice(66, 130)}`);
  const v = Number.parseInt(sig.slice(130), 16);
  const flip = v === 27 ? 28 : 27;
  return [
    sig,
    `0x${r}${hex64(s)}${flip.toString(16)}`,
    `0x${r}${hex64(N - s)}${v.toString(16)}`,
    `0x${r}${hex64(N - s)}${flip.toString(16)}`,
    `0x${r}${hex64(s)}0${v - 27}`,
    `0x${r}${hex64(0n)}${v.toString(16)}`,
    `0x${hex64(N)}${hex64(s)}${v.toString(16)}`,
    other,
  ] as Hex[];
}

const byRecovery = async (miner: string, digest: Hex, signature: Hex) =>
  (await recoverAddress({ hash: digest, signature }).catch(() => null))?.toLowerCase() === miner.toLowerCase();

describe("precommit signatures against a miner's cached key (durable-objects/session-queue/signer-keys.ts)", () => {
  it("accepts exactly what recovery accepts, before and after the key is cached", async () => {
    const miner = privateKeyToAccount(generatePrivateKey());
    const stranger = privateKeyToAccount(generatePrivateKey());
    let accepted = 0;
    for (let i = 0; i < 12; i++) {
      const digest = keccak256(toHex(`task ${i}`));
      const own = await miner.sign({ hash: digest });
      const foreign = await stranger.sign({ hash: digest });
      for (const sig of variants(own, i % 2 ? foreign : await miner.sign({ hash: keccak256(toHex(`other ${i}`)) }))) {
        const expected = await byRecovery(miner.address, digest, sig);
        expect(await signedBy(miner.address, digest, sig), `${i}: ${sig}`).toBe(expected);
        if (expected) accepted++;
      }
    }
    // The genuine signature, the same with v written 0/1, and its (s negated, v flipped) twin recover to the miner:
    // accepted; all else not.
    expect(accepted).toBe(36);
  });

  it("a signature for another miner's address is refused even once that miner's key is cached", async () => {
    const a = privateKeyToAccount(generatePrivateKey());
    const b = privateKeyToAccount(generatePrivateKey());
    const digest = keccak256(toHex("t"));
    expect(await signedBy(a.address, digest, await a.sign({ hash: digest }))).toBe(true);
    expect(await signedBy(b.address, digest, await b.sign({ hash: digest }))).toBe(true);
    expect(await signedBy(a.address, digest, await b.sign({ hash: digest }))).toBe(false);
    expect(await signedBy(b.address.toUpperCase().replace("0X", "0x"), digest, await a.sign({ hash: digest }))).toBe(false);
  });
});
