import { type Address, concat, domainSeparator, encodeAbiParameters, type Hex, hashStruct, keccak256, toBytes } from "viem";

// EIP-712 typed data for the miner's commit-reveal. The hash is signed before the result is revealed; the
// SessionQueue checks the revealed text hashes to it and that the signature recovers the miner's address.
//
// Every signature is bound to one deployment: the EIP-712 domain names the router (ROUTER_NAME), its chain
// (CHAIN_ID) and, when it has one, its verifying address (ROUTER_ADDRESS), and the registration message names
// the router and the URL origin the miner registered at. The miner learns them from the router's challenge
// (checking the origin is the one it connected to) and signs with them; another deployment recovers another
// signer from the same signature and refuses it.

/** The deployment a miner talks to, as its router announces it (`POST /api/v1/miners/challenge`, `/register`). */
export interface RouterIdentity {
  name: string;
  chain_id: number;
  /** The router's verifying address (ROUTER_ADDRESS), or null when it has none. */
  address: Address | null;
  /** The URL origin the router answered at, e.g. https://router.example (registration messages only). */
  origin: string;
}

/** Version of the signed structures (2: domains carry the deployment). */
export const SIGNING_VERSION = "2";

export interface SigningDomain {
  name: string;
  version: string;
  chainId: number;
  verifyingContract?: Address;
}

/** The EIP-712 domain of one deployment: its name, chain id and verifying address (when it has one). */
export function signingDomain(router: Pick<RouterIdentity, "name" | "chain_id" | "address">): SigningDomain {
  return {
    name: router.name,
    version: SIGNING_VERSION,
    chainId: router.chain_id,
    ...(router.address ? { verifyingContract: router.address } : {}),
  };
}

export const PRECOMMIT_TYPES = {
  Precommit: [
    { name: "session", type: "string" },
    { name: "task", type: "string" },
    { name: "miner", type: "address" },
    { name: "hash", type: "bytes32" },
  ],
} as const;

export interface PrecommitFields {
  session: string;
  task: string;
  miner: Address;
  hash: Hex;
}

export function precommitTypedData(fields: PrecommitFields, domain: SigningDomain) {
  return {
    domain,
    types: PRECOMMIT_TYPES,
    primaryType: "Precommit" as const,
    message: fields,
  };
}

/**
 * A paid session deposit's claim (`POST /api/v1/sessions/:id/deposits` with `{tx_hash, signature}`): the payer of
 * the tUSD transfer signs the session it credits and the transaction, so nobody else can post its hash, and the
 * signature cannot be replayed to another session.
 */
export const DEPOSIT_TYPES = {
  Deposit: [
    { name: "session", type: "string" },
    { name: "tx", type: "bytes32" },
  ],
} as const;

export interface DepositFields {
  session: string;
  tx: Hex;
}

export function depositTypedData(fields: DepositFields, domain: SigningDomain) {
  return { domain, types: DEPOSIT_TYPES, primaryType: "Deposit" as const, message: fields };
}

/** Domain separators by domain: a deployment has one, and hashing it again for every precommit is wasted work. */
const separators = new Map<string, Hex>();

/**
 * The EIP-712 digest of a precommit — what viem's `hashTypedData(precommitTypedData(…))` computes — with the
 * domain separator computed once per domain. The miner signs it and the SessionQueue recovers from it on the
 * hot path (one signature per replica of every task).
 */
export function precommitDigest(fields: PrecommitFields, domain: SigningDomain): Hex {
  return typedDataDigest({ domain, types: PRECOMMIT_TYPES, primaryType: "Precommit", message: fields });
}

/**
 * The EIP-712 digest of typed data — what viem's `hashTypedData` computes, so `account.sign({hash})` gives the
 * signature `signTypedData` would — with the domain separator cached per domain. For the signatures made or checked
 * per task (precommits, receipts); the struct itself is still hashed by viem's `hashStruct`.
 */
export function typedDataDigest(data: {
  domain: SigningDomain;
  types: Record<string, readonly { name: string; type: string }[]>;
  primaryType: string;
  message: object;
}): Hex {
  const { domain } = data;
  const key = `${domain.name}\u0000${domain.version}\u0000${domain.chainId}\u0000${domain.verifyingContract ?? ""}`;
  let separator = separators.get(key);
  if (!separator) {
    separator = domainSeparator({ domain });
    if (separators.size < 64) separators.set(key, separator);
  }
  return keccak256(
    concat([
      "0x1901",
      separator,
      hashStruct({ data: data.message as Record<string, unknown>, primaryType: data.primaryType, types: data.types }),
    ]),
  );
}

/**
 * A miner's off-chain result write (`POST /api/v3/offchain/result`): signed over the session, the task, the
 * miner and the SHA-256 of the stored bytes (ciphertext when encrypted), checked before anything is stored.
 */
export const OFFCHAIN_RESULT_TYPES = {
  OffchainResult: [
    { name: "session", type: "string" },
    { name: "task", type: "string" },
    { name: "miner", type: "address" },
    { name: "content", type: "bytes32" },
  ],
} as const;

export interface OffchainResultFields {
  session: string;
  task: string;
  miner: Address;
  /** 0x + SHA-256 of the stored bytes. */
  content: Hex;
}

export function offchainResultTypedData(fields: OffchainResultFields, domain: SigningDomain) {
  return {
    domain,
    types: OFFCHAIN_RESULT_TYPES,
    primaryType: "OffchainResult" as const,
    message: fields,
  };
}

/** Hash of a result as revealed: keccak256 of its UTF-8 bytes (what consensus compares). */
export function resultHash(text: string): Hex {
  return keccak256(toBytes(text));
}

export interface CommitmentFields {
  session: string;
  task: string;
  miner: Address;
  /** resultHash of the text the miner will reveal. */
  result: Hex;
}

/**
 * What a miner precommits (the `hash` it signs): keccak256 over the ABI encoding of session, task, miner and the
 * result hash. It binds the miner, so two miners with the same output precommit different values and nobody
 * can precommit a commitment seen elsewhere as their own; the router recomputes it from the revealed text.
 */
export function commitmentHash(f: CommitmentFields): Hex {
  const types = [{ type: "string" }, { type: "string" }, { type: "address" }, { type: "bytes32" }] as const;
  return keccak256(encodeAbiParameters(types, [f.session, f.task, f.miner, f.result]));
}

/**
 * The message a miner signs (EIP-191) to prove it holds its wallet key when registering. It names the router
 * (name, verifying address, chain, origin), so a signature obtained by one router is refused by any other.
 */
export function registrationMessage(address: Address, nonce: string, router: RouterIdentity): string {
  return [
    "edge-inference-network registration",
    `router: ${router.name}`,
    `router address: ${router.address?.toLowerCase() ?? "none"}`,
    `chain id: ${router.chain_id}`,
    `origin: ${router.origin}`,
    `address: ${address.toLowerCase()}`,
    `nonce: ${nonce}`,
  ].join("\n");
}
