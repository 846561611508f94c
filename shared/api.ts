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

/**
 * What a miner's model can read: `positions` tokens in all (prompt and completion), and — for byte-level BPE
 * tokenizers without a normalizer, where every token stands for at most that many input bytes — the byte length
 * of its longest token, so the router can bound a prompt's token count from below by its bytes.
 */
export const ModelContext = z.object({
  model: z.string().min(1).max(200),
  positions: z.number().int().min(1).max(100_000_000),
  max_token_bytes: z.number().int().min(1).max(4096).optional(),
});
export type ModelContext = z.infer<typeof ModelContext>;

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
  /** The context of each model it serves that has one (absent: unknown, so the router cannot judge prompts early). */
  contexts: z.array(ModelContext).max(32).optional(),
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
