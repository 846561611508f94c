import { x402Facilitator } from "@x402/core/facilitator";
import { HTTPFacilitatorClient } from "@x402/core/http";
import type { FacilitatorClient } from "@x402/core/server";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { ExactEvmScheme } from "@x402/evm/exact/facilitator";
import { createWalletClient, type Hex, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type ChainConfig, viemChain } from "../shared/chain.ts";

// The facilitator that verifies and settles payments: a remote one (X402_FACILITATOR_URL, production), or the
// packages' own x402Facilitator with the EVM exact scheme run in-process against CHAIN_RPC_URL, its
// transferWithAuthorization transactions sent from FACILITATOR_KEY's account (which pays their gas). Settlements go
// through the Payments Durable Object one at a time (payments.ts), so that account's nonces never race.

/** Which facilitator: plain data, so it crosses Durable Object RPC (workers/x402/config.ts derives it). */
export interface FacilitatorTarget {
  chain: ChainConfig;
  network: `eip155:${number}`;
  facilitatorUrl: string | null;
}

let cached: { key: string; client: FacilitatorClient } | null = null;

/** The facilitator for this configuration (one per isolate and configuration). */
export function facilitatorFor(cfg: FacilitatorTarget, env: Env): FacilitatorClient {
  const rawKey = ((env as unknown as Record<string, string | undefined>).FACILITATOR_KEY ?? "").trim();
  const key = `${cfg.facilitatorUrl ?? ""}|${cfg.chain.rpcUrl}|${cfg.network}|${rawKey}`;
  if (cached?.key === key) return cached.client;
  let client: FacilitatorClient;
  if (cfg.facilitatorUrl) {
    client = new HTTPFacilitatorClient({ url: cfg.facilitatorUrl });
  } else {
    const pk = (rawKey.startsWith("0x") ? rawKey : `0x${rawKey}`) as Hex;
    if (!/^0x[0-9a-fA-F]{64}$/.test(pk)) throw new Error("FACILITATOR_KEY is not a 32-byte hex key");
    const account = privateKeyToAccount(pk);
    const wallet = createWalletClient({ account, chain: viemChain(cfg.chain), transport: http(cfg.chain.rpcUrl) }).extend(publicActions);
    const signer = toFacilitatorEvmSigner({
      address: account.address,
      readContract: (a) => wallet.readContract(a as never),
      verifyTypedData: (a) => wallet.verifyTypedData(a as never),
      writeContract: (a) => wallet.writeContract(a as never),
      sendTransaction: (a) => wallet.sendTransaction(a as never),
      waitForTransactionReceipt: (a) => wallet.waitForTransactionReceipt(a as never),
      getCode: (a) => wallet.getCode(a),
    });
    client = new x402Facilitator().register(cfg.network, new ExactEvmScheme(signer)) as unknown as FacilitatorClient;
  }
  cached = { key, client };
  return client;
}
