import { z } from "zod";

// REST bodies shared by the router (validated at the route edge) and its clients (the miner agent, tests).

const Address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address");

export const DEVICES = ["cpu", "webgpu"] as const;

export const MinerChallengeRequest = z.object({ address: Address });
export type MinerChallengeRequest = z.infer<typeof MinerChallengeRequest>;

export const MinerChallengeResponse = z.object({
  address: z.string(),
  nonce: z.string(),
  message: z.string(),
  expires_at: z.number(),
});
export type MinerChallengeResponse = z.infer<typeof MinerChallengeResponse>;

export const MinerRegisterRequest = z.object({
  address: Address,
  nonce: z.string().min(8).max(128),
  signature: z.string().regex(/^0x[0-9a-fA-F]+$/),
  models: z.array(z.string().min(1).max(200)).min(1).max(32),
  device: z.enum(DEVICES),
  capacity: z.number().int().min(1).max(256),
  name: z.string().max(64).optional(),
  version: z.string().max(32).optional(),
  /** Tokens the miner puts at stake (absent: 0); the pool refuses a stake below its MIN_STAKE. */
  stake: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
});
export type MinerRegisterRequest = z.infer<typeof MinerRegisterRequest>;

export const MinerRegisterResponse = z.object({
  address: z.string(),
  /** Bearer token for the miner's WebSockets (pool channel and session channels). */
  token: z.string(),
  expires_at: z.number(),
  heartbeat_ms: z.number().int(),
});
export type MinerRegisterResponse = z.infer<typeof MinerRegisterResponse>;
