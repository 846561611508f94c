import { toFacilitatorEvmSigner } from "@x402/evm";
import { ExactEvmScheme as ExactEvmClient } from "@x402/evm/exact/client";
import { ExactEvmScheme as ExactEvmFacilitator } from "@x402/evm/exact/facilitator";
import { createWalletClient, type Hex, hashDomain, http, keccak256, parseEventLogs, publicActions, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caip2, minerStakingAbi, TOKEN_DOMAIN, testUsdAbi, viemChain } from "../../shared/chain.ts";
import {
  type ChainAccount,
  chainClients,
  increaseTime,
  type LocalChain,
  startChain,
  TRANSFER_WITH_AUTHORIZATION_TYPES,
  tokenBalance,
} from "../helpers/chain.ts";

// The project's contracts (chain/contracts) on the real local chain: TestUSD's EIP-3009 authorisations (what x402
// settles with) and MinerStaking's stake, unbonding and slashing. One chain for the file; the EIP-3009 tests run
// first because the staking tests move the chain's clock forward.

const UNBONDING = 3600;

let chain: LocalChain;

beforeAll(async () => {
  chain = await startChain({ unbondingDelay: UNBONDING });
});
afterAll(async () => {
  await chain?.stop();
});

const as = (a: ChainAccount) => chainClients(chain, a.privateKey);
const nonce = (label: string): Hex => keccak256(toHex(`${label}-${Math.random()}`));
async function now(): Promise<bigint> {
  return (await as(chain.deployer).public.getBlock()).timestamp;
}
async function receiptOf(hash: Hex) {
  return as(chain.deployer).public.waitForTransactionReceipt({ hash, pollingInterval: 50 });
}

/** An EIP-3009 TransferWithAuthorization signed by `signer` (normally `from`). */
async function authorise(
  signer: ChainAccount,
  msg: { from: ChainAccount; to: `0x${string}`; value: bigint; validAfter?: bigint; validBefore?: bigint },
) {
  const message = {
    from: msg.from.address,
    to: msg.to,
    value: msg.value,
    validAfter: msg.validAfter ?? 0n,
    validBefore: msg.validBefore ?? (await now()) + 600n,
    nonce: nonce("auth"),
  };
  const signature = await privateKeyToAccount(signer.privateKey).signTypedData({
    domain: { ...TOKEN_DOMAIN, chainId: chain.chainId, verifyingContract: chain.token },
    types: TRANSFER_WITH_AUTHORIZATION_TYPES,
    primaryType: "TransferWithAuthorization",
    message,
  });
  const v = Number.parseInt(signature.slice(130, 132), 16);
  const vrs = [v, `0x${signature.slice(2, 66)}`, `0x${signature.slice(66, 130)}`] as const;
  const args = [message.from, message.to, message.value, message.validAfter, message.validBefore, message.nonce] as const;
  return { message, signature, args, vrs: [...args, ...vrs] as const };
}

/** transferWithAuthorization (v, r, s) submitted by `relayer`; resolves to the receipt or rejects with the revert. */
async function submit(relayer: ChainAccount, auth: Awaited<ReturnType<typeof authorise>>) {
  const hash = await as(relayer).wallet.writeContract({
    address: chain.token,
    abi: testUsdAbi,
    functionName: "transferWithAuthorization",
    args: auth.vrs,
  });
  return receiptOf(hash);
}

describe("TestUSD (EIP-3009)", () => {
  it("has the EIP-712 domain x402 payers sign for", async () => {
    const c = as(chain.deployer).public;
    const read = (functionName: "name" | "symbol" | "version" | "decimals" | "DOMAIN_SEPARATOR") =>
      c.readContract({ address: chain.token, abi: testUsdAbi, functionName });
    expect(await read("name")).toBe(TOKEN_DOMAIN.name);
    expect(await read("version")).toBe(TOKEN_DOMAIN.version);
    expect(await read("symbol")).toBe("tUSD");
    expect(await read("decimals")).toBe(6);
    expect(await read("DOMAIN_SEPARATOR")).toBe(
      hashDomain({
        domain: { ...TOKEN_DOMAIN, chainId: BigInt(chain.chainId), verifyingContract: chain.token },
        types: {
          EIP712Domain: [
            { name: "name", type: "string" },
            { name: "version", type: "string" },
            { name: "chainId", type: "uint256" },
            { name: "verifyingContract", type: "address" },
          ],
        },
      }),
    );
  });

  it("moves tokens for a valid authorisation submitted by anyone, once", async () => {
    const [payer, payee, relayer] = chain.accounts;
    const before = [await tokenBalance(chain, payer.address), await tokenBalance(chain, payee.address)];
    const auth = await authorise(payer, { from: payer, to: payee.address, value: 1_234_567n });
    const receipt = await submit(relayer, auth);
    expect(receipt.status).toBe("success");
    const events = parseEventLogs({ abi: testUsdAbi, logs: receipt.logs });
    expect(events.map((e) => e.eventName)).toEqual(["AuthorizationUsed", "Transfer"]);
    expect(events[0].args).toMatchObject({ authorizer: payer.address, nonce: auth.message.nonce });
    expect(events[1].args).toMatchObject({ from: payer.address, to: payee.address, value: 1_234_567n });
    expect(await tokenBalance(chain, payer.address)).toBe(before[0] - 1_234_567n);
    expect(await tokenBalance(chain, payee.address)).toBe(before[1] + 1_234_567n);
    const used = await as(relayer).public.readContract({
      address: chain.token,
      abi: testUsdAbi,
      functionName: "authorizationState",
      args: [payer.address, auth.message.nonce],
    });
    expect(used).toBe(true);
    // The same authorisation again (the replayed x402 payment): refused, nothing moves.
    await expect(submit(relayer, auth)).rejects.toThrow(/authorization is used or canceled/);
    expect(await tokenBalance(chain, payee.address)).toBe(before[1] + 1_234_567n);
  });

  it("takes the `bytes signature` overload too", async () => {
    const [payer, payee, relayer] = chain.accounts;
    const auth = await authorise(payer, { from: payer, to: payee.address, value: 5n });
    const hash = await as(relayer).wallet.writeContract({
      address: chain.token,
      abi: testUsdAbi,
      functionName: "transferWithAuthorization",
      args: [...auth.args, auth.signature],
    });
    expect((await receiptOf(hash)).status).toBe("success");
  });

  it("refuses expired, not yet valid, wrongly signed and altered authorisations", async () => {
    const [payer, payee, relayer, other] = chain.accounts;
    const before = await tokenBalance(chain, payer.address);
    const t = await now();
    await expect(
      submit(relayer, await authorise(payer, { from: payer, to: payee.address, value: 1n, validBefore: t - 1n })),
    ).rejects.toThrow(/authorization is expired/);
    await expect(
      submit(relayer, await authorise(payer, { from: payer, to: payee.address, value: 1n, validAfter: t + 3600n })),
    ).rejects.toThrow(/authorization is not yet valid/);
    // Signed by another key than `from`.
    await expect(submit(relayer, await authorise(other, { from: payer, to: payee.address, value: 1n }))).rejects.toThrow(
      /invalid signature/,
    );
    // A valid signature over other terms than those submitted (a larger value).
    const auth = await authorise(payer, { from: payer, to: payee.address, value: 1n });
    const altered = { ...auth, vrs: [auth.vrs[0], auth.vrs[1], 2n, ...auth.vrs.slice(3)] as unknown as typeof auth.vrs };
    await expect(submit(relayer, altered)).rejects.toThrow(/invalid signature/);
    expect(await tokenBalance(chain, payer.address)).toBe(before);
  });

  it("cancels an unused authorisation; receiveWithAuthorization only from the payee", async () => {
    const [payer, payee, relayer] = chain.accounts;
    const auth = await authorise(payer, { from: payer, to: payee.address, value: 7n });
    const receiveArgs = [...auth.args, auth.signature] as const;
    await expect(
      as(relayer).wallet.writeContract({
        address: chain.token,
        abi: testUsdAbi,
        functionName: "receiveWithAuthorization",
        args: receiveArgs,
      }),
    ).rejects.toThrow(/caller must be the payee/);

    const cancelSig = await privateKeyToAccount(payer.privateKey).signTypedData({
      domain: { ...TOKEN_DOMAIN, chainId: chain.chainId, verifyingContract: chain.token },
      types: {
        CancelAuthorization: [
          { name: "authorizer", type: "address" },
          { name: "nonce", type: "bytes32" },
        ],
      },
      primaryType: "CancelAuthorization",
      message: { authorizer: payer.address, nonce: auth.message.nonce },
    });
    const cancel = await receiptOf(
      await as(relayer).wallet.writeContract({
        address: chain.token,
        abi: testUsdAbi,
        functionName: "cancelAuthorization",
        args: [payer.address, auth.message.nonce, cancelSig],
      }),
    );
    expect(parseEventLogs({ abi: testUsdAbi, logs: cancel.logs, eventName: "AuthorizationCanceled" })).toHaveLength(1);
    await expect(
      as(payee).wallet.writeContract({
        address: chain.token,
        abi: testUsdAbi,
        functionName: "receiveWithAuthorization",
        args: receiveArgs,
      }),
    ).rejects.toThrow(/authorization is used or canceled/);
  });

  it("mints only for minters", async () => {
    const [stranger] = chain.accounts;
    await expect(
      as(stranger).wallet.writeContract({ address: chain.token, abi: testUsdAbi, functionName: "mint", args: [stranger.address, 1n] }),
    ).rejects.toThrow(/not a minter/);
  });

  it("settles through @x402/evm's exact scheme (client payload, facilitator verify + settle), and refuses the replay", async () => {
    const [payer, payee] = chain.accounts;
    const facilitatorAccount = privateKeyToAccount(chain.facilitator.privateKey);
    // A viem wallet client with public actions is what the package expects (its signer type is looser than viem's).
    const signer = toFacilitatorEvmSigner({
      ...(createWalletClient({
        account: facilitatorAccount,
        chain: viemChain(chain),
        transport: http(chain.rpcUrl),
        pollingInterval: 50,
      }).extend(publicActions) as unknown as Parameters<typeof toFacilitatorEvmSigner>[0]),
      address: facilitatorAccount.address,
    });
    const facilitator = new ExactEvmFacilitator(signer);
    const requirements = {
      scheme: "exact",
      network: caip2(chain.chainId),
      asset: chain.token,
      amount: "10000",
      payTo: payee.address,
      maxTimeoutSeconds: 60,
      extra: { ...TOKEN_DOMAIN },
    };
    const created = await new ExactEvmClient(privateKeyToAccount(payer.privateKey)).createPaymentPayload(2, requirements);
    const payload = { ...created, accepted: requirements };
    const before = await tokenBalance(chain, payee.address);
    expect(await facilitator.verify(payload, requirements)).toMatchObject({ isValid: true });
    const settled = await facilitator.settle(payload, requirements);
    expect(settled).toMatchObject({ success: true, network: "eip155:31337" });
    expect(await tokenBalance(chain, payee.address)).toBe(before + 10_000n);
    // Multicall3 on the local chain lets the facilitator name the reason.
    expect(await facilitator.verify(payload, requirements)).toMatchObject({
      isValid: false,
      invalidReason: expect.stringMatching(/nonce/i),
    });
  });
});

describe("MinerStaking", () => {
  const staking = () => chain.staking;
  async function write(who: ChainAccount, functionName: string, args: readonly unknown[]) {
    const hash = await as(who).wallet.writeContract({ address: staking(), abi: minerStakingAbi, functionName, args } as never);
    return receiptOf(hash);
  }
  async function read<T>(functionName: string, args: readonly unknown[]): Promise<T> {
    return (await as(chain.deployer).public.readContract({ address: staking(), abi: minerStakingAbi, functionName, args } as never)) as T;
  }
  async function stake(miner: ChainAccount, amount: bigint) {
    await receiptOf(
      await as(miner).wallet.writeContract({ address: chain.token, abi: testUsdAbi, functionName: "approve", args: [staking(), amount] }),
    );
    return write(miner, "stake", [amount]);
  }
  const events = (receipt: { logs: Parameters<typeof parseEventLogs>[0]["logs"] }) =>
    parseEventLogs({ abi: minerStakingAbi, logs: receipt.logs });

  it("stakes from the miner's wallet; withdraws only after the unbonding delay", async () => {
    const miner = chain.accounts[4];
    const wallet0 = await tokenBalance(chain, miner.address);
    const staked = await stake(miner, 5_000_000n);
    expect(events(staked)).toMatchObject([{ eventName: "Staked", args: { miner: miner.address, amount: 5_000_000n } }]);
    expect(await read("stakeOf", [miner.address])).toBe(5_000_000n);
    expect(await tokenBalance(chain, miner.address)).toBe(wallet0 - 5_000_000n);

    await expect(write(miner, "requestUnstake", [5_000_001n])).rejects.toThrow(/exceeds stake/);
    const requested = await write(miner, "requestUnstake", [2_000_000n]);
    const releaseAt = (await now()) + BigInt(UNBONDING);
    expect(events(requested)).toMatchObject([
      { eventName: "UnstakeRequested", args: { miner: miner.address, amount: 2_000_000n, releaseAt } },
    ]);
    expect(await read("stakeOf", [miner.address])).toBe(3_000_000n);
    expect(await read("unbondingOf", [miner.address])).toEqual([2_000_000n, releaseAt]);

    await expect(write(miner, "withdraw", [])).rejects.toThrow(/still unbonding/);
    await increaseTime(chain.rpcUrl, UNBONDING - 60);
    await expect(write(miner, "withdraw", [])).rejects.toThrow(/still unbonding/);
    await increaseTime(chain.rpcUrl, 61);
    const withdrawn = await write(miner, "withdraw", []);
    expect(events(withdrawn)).toMatchObject([{ eventName: "Withdrawn", args: { miner: miner.address, amount: 2_000_000n } }]);
    expect(await tokenBalance(chain, miner.address)).toBe(wallet0 - 3_000_000n);
    expect(await read("unbondingOf", [miner.address])).toEqual([0n, 0n]);
    await expect(write(miner, "withdraw", [])).rejects.toThrow(/nothing to withdraw/);
  });

  it("slashes only by a slasher the owner named, active stake first, then unbonding, capped", async () => {
    const [miner, slasher, stranger] = [chain.accounts[5], chain.accounts[6], chain.accounts[7]];
    await stake(miner, 1_000n);
    await write(miner, "requestUnstake", [400n]);
    const evidence = nonce("fault");
    await expect(write(stranger, "slash", [miner.address, 100n, evidence])).rejects.toThrow(/not a slasher/);
    await expect(write(stranger, "setSlasher", [stranger.address, true])).rejects.toThrow(/not the owner/);
    await write(chain.deployer, "setSlasher", [slasher.address, true]);
    expect(await read("slashers", [slasher.address])).toBe(true);

    const treasury0 = await tokenBalance(chain, chain.deployer.address);
    const first = await write(slasher, "slash", [miner.address, 700n, evidence]);
    expect(events(first)).toMatchObject([{ eventName: "Slashed", args: { miner: miner.address, amount: 700n, evidenceHash: evidence } }]);
    expect(await read("stakeOf", [miner.address])).toBe(0n); // 600 active
    expect((await read<[bigint, bigint]>("unbondingOf", [miner.address]))[0]).toBe(300n); // then 100 of 400 unbonding
    // The same evidence again (a resubmitted batch): nothing taken.
    expect(events(await write(slasher, "slash", [miner.address, 700n, evidence]))).toEqual([]);
    // More than the miner holds: capped at what is left.
    const capped = await write(slasher, "slash", [miner.address, 10_000n, nonce("fault")]);
    expect(events(capped)).toMatchObject([{ eventName: "Slashed", args: { amount: 300n } }]);
    expect((await read<[bigint, bigint]>("unbondingOf", [miner.address]))[0]).toBe(0n);
    expect(await tokenBalance(chain, chain.deployer.address)).toBe(treasury0 + 1_000n);
  });

  it("slashes a batch in one transaction", async () => {
    const [a, b, c] = [chain.accounts[0], chain.accounts[1], chain.accounts[2]];
    const slasher = chain.accounts[6];
    for (const m of [a, b, c]) await stake(m, 500n);
    const hashes = [nonce("a"), nonce("b"), nonce("c")];
    await expect(write(slasher, "slashBatch", [[a.address, b.address], [1n], hashes.slice(0, 2)])).rejects.toThrow(/length mismatch/);
    await expect(write(chain.accounts[3], "slashBatch", [[a.address], [1n], [hashes[0]]])).rejects.toThrow(/not a slasher/);
    const receipt = await write(slasher, "slashBatch", [[a.address, b.address, c.address], [50n, 500n, 900n], hashes]);
    expect(events(receipt).map((e) => [e.eventName, (e.args as { amount: bigint }).amount])).toEqual([
      ["Slashed", 50n],
      ["Slashed", 500n],
      ["Slashed", 500n],
    ]);
    expect(await read("stakeOf", [a.address])).toBe(450n);
    expect(await read("stakeOf", [b.address])).toBe(0n);
    expect(await read("stakeOf", [c.address])).toBe(0n);
  });
});
