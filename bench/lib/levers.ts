import { type Hex, keccak256, recoverAddress, recoverTypedDataAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { signedBy } from "../../durable-objects/session-queue/signer-keys.ts";
import { precommitDigest, precommitTypedData, signingDomain } from "../../shared/signing.ts";
import { fx, pct } from "./load.ts";

// The signature lever measured on its own, in this process (Node; the SessionQueue runs the same JavaScript in
// workerd): viem's typed-data path against the precommit digest with the domain separator cached, for the
// miner's signing and the SessionQueue's recovery, and recovery against the check with the miner's cached key
// (durable-objects/session-queue/signer-keys.ts). Interleaved, so all see the same machine.

export async function signatureLever(n = 300): Promise<string[]> {
  const account = privateKeyToAccount(generatePrivateKey());
  const domain = signingDomain({ name: "edge-inference-router", chain_id: 31337, address: null });
  const times = {
    signTyped: [] as number[],
    signDigest: [] as number[],
    recoverTyped: [] as number[],
    recoverDigest: [] as number[],
    cachedKey: [] as number[],
  };
  const time = async (xs: number[], f: () => Promise<unknown>) => {
    const t0 = performance.now();
    await f();
    xs.push(performance.now() - t0);
  };
  for (let i = -20; i < n; i++) {
    const fields = {
      session: "default",
      task: String(i + 100),
      miner: account.address,
      hash: keccak256(`0x${(i + 100).toString(16).padStart(4, "0")}`),
    };
    const typed = precommitTypedData(fields, domain);
    let signature: Hex = "0x";
    await time(times.signTyped, async () => (signature = await account.signTypedData(typed)));
    await time(times.signDigest, () => account.sign({ hash: precommitDigest(fields, domain) }));
    await time(times.recoverTyped, () => recoverTypedDataAddress({ ...typed, signature }));
    await time(times.recoverDigest, () => recoverAddress({ hash: precommitDigest(fields, domain), signature }));
    await time(times.cachedKey, () => signedBy(account.address, precommitDigest(fields, domain), signature));
    if (i < 0) for (const xs of Object.values(times)) xs.length = 0;
  }
  const row = (name: string, a: number[], b: number[]) =>
    `  ${name.padEnd(60)} ${fx(pct(a, 50), 3)} → ${fx(pct(b, 50), 3)} ms p50 (${fx((100 * (pct(a, 50) - pct(b, 50))) / pct(a, 50), 0)}% less)`;
  return [
    row("miner: signTypedData → sign(precommitDigest)", times.signTyped, times.signDigest),
    row("SessionQueue: recoverTypedDataAddress → recoverAddress(digest)", times.recoverTyped, times.recoverDigest),
    row("SessionQueue: recoverAddress(digest) → check with the cached key", times.recoverDigest, times.cachedKey),
  ];
}
