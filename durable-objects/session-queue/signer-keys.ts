import { invert } from "@noble/curves/abstract/modular";
import { secp256k1 } from "@noble/curves/secp256k1";
import { type Hex, recoverPublicKey } from "viem";
import { publicKeyToAddress } from "viem/accounts";

// Whether a miner signed a digest: the answer public-key recovery gives, cheaper. A miner's first signature is
// recovered (its public key, then its address); that key is kept per isolate with its precomputed multiples, and
// later signatures are checked against it: R = z/s·G + r/s·P must have x = r and the y parity the signature's v
// names. That is exactly when recovering (r, s, v) yields P, so the signature stays valid evidence for an on-chain
// ecrecover. About 2.4× cheaper than recovery in Node (0.50 vs 1.2 ms p50). Anything the fast check does not accept
// goes through recovery, whose answer is final, so both paths accept the same signatures.

const Point = secp256k1.ProjectivePoint;
const N = secp256k1.CURVE.n;
/**
 * Known miners' public keys (lowercase address → point with cached multiples), oldest dropped first. A window of 4
 * keeps ~500 points (~0.1 MB) per key, and checks in ~0.5 ms: the bound keeps them to a few MB per isolate.
 */
const keys = new Map<string, InstanceType<typeof Point>>();
const MAX_KEYS = 128;
const WINDOW = 4;

/** A 65-byte signature with v 27 or 28 and r, s in [1, n): the only shape the fast check takes. */
function parts(signature: string): { r: bigint; s: bigint; parity: number } | null {
  if (signature.length !== 132) return null;
  const r = BigInt(`0x${signature.slice(2, 66)}`);
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  const v = Number.parseInt(signature.slice(130), 16);
  if ((v !== 27 && v !== 28) || r <= 0n || r >= N || s <= 0n || s >= N) return null;
  return { r, s, parity: v - 27 };
}

function fastCheck(key: InstanceType<typeof Point>, digest: Hex, signature: string): boolean {
  const sig = parts(signature);
  if (!sig) return false;
  const w = invert(sig.s, N);
  const u1 = ((BigInt(digest) % N) * w) % N;
  if (u1 === 0n) return false;
  const R = Point.BASE.multiply(u1).add(key.multiply((sig.r * w) % N));
  if (R.equals(Point.ZERO)) return false;
  const { x, y } = R.toAffine();
  return x === sig.r && Number(y & 1n) === sig.parity;
}

/** Whether `signature` over `digest` is `miner`'s (the address the signature recovers to). */
export async function signedBy(miner: string, digest: Hex, signature: Hex): Promise<boolean> {
  const address = miner.toLowerCase();
  const known = keys.get(address);
  if (known && fastCheck(known, digest, signature)) return true;
  const pub = await recoverPublicKey({ hash: digest, signature }).catch(() => null);
  if (!pub || publicKeyToAddress(pub).toLowerCase() !== address) return false;
  if (!known) {
    if (keys.size >= MAX_KEYS) keys.delete(keys.keys().next().value!);
    const point = Point.fromHex(pub.slice(2));
    point._setWindowSize(WINDOW);
    keys.set(address, point);
  }
  return true;
}
