import { type Address, type Hex, keccak256, toBytes } from "viem";

// EIP-712 typed data for the miner's commit-reveal. The hash is signed before the result is revealed; the
// SessionQueue checks the revealed text hashes to it and that the signature recovers the miner's address.
export const EIP712_DOMAIN = { name: "EdgeInferenceNetwork", version: "1" } as const;

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

export function precommitTypedData(fields: PrecommitFields) {
  return {
    domain: EIP712_DOMAIN,
    types: PRECOMMIT_TYPES,
    primaryType: "Precommit" as const,
    message: fields,
  };
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

export function offchainResultTypedData(fields: OffchainResultFields) {
  return {
    domain: EIP712_DOMAIN,
    types: OFFCHAIN_RESULT_TYPES,
    primaryType: "OffchainResult" as const,
    message: fields,
  };
}

/** Hash of a result as committed: keccak256 of its UTF-8 bytes. */
export function resultHash(text: string): Hex {
  return keccak256(toBytes(text));
}

/** The message a miner signs (EIP-191) to prove it holds its wallet key when registering. */
export function registrationMessage(address: Address, nonce: string): string {
  return `edge-inference-network registration\naddress: ${address.toLowerCase()}\nnonce: ${nonce}`;
}
