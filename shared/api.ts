import { z } from "zod";

// REST bodies shared by the router (validated at the route edge) and its clients (the miner agent, tests).

const Address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address");

export const DEVICES = ["cpu", "webgpu"] as const;
/** The slowest speed a miner may declare: slower would put every client deadline of its sessions out of reach. */
export const MIN_DECLARED_TOKENS_PER_S = 0.5;

export const MinerChallengeRequest = z.object({ address: Address });
export type MinerChallengeRequest = z.infer<typeof MinerChallengeRequest>;

/** Which deployment answers (shared/signing.ts `RouterIdentity`): the miner signs for it and nothing else. */
export const RouterIdentity = z.object({
  name: z.string().min(1).max(100),
  chain_id: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  address: Address.transform((a) => a as `0x${string}`).nullable(),
  origin: z.string().url().max(300),
});
export type RouterIdentity = z.infer<typeof RouterIdentity>;

export const MinerChallengeResponse = z.object({
  address: z.string(),
  nonce: z.string(),
  message: z.string(),
  expires_at: z.number(),
  /** The router the message names: the agent checks `origin` is the one it connected to before signing. */
  router: RouterIdentity,
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
  /**
   * Decode speed the miner commits to per task at its full concurrency (the agent measures it at startup): its
   * precommit deadline is budgeted from it, and the slowest serving miners set the floor of client deadlines.
   * Absent: the router's DEADLINE_TOKEN_MS per token.
   */
  tokens_per_s: z.number().min(MIN_DECLARED_TOKENS_PER_S).max(10_000_000).optional(),
});
export type MinerRegisterRequest = z.infer<typeof MinerRegisterRequest>;

export const MinerRegisterResponse = z.object({
  address: z.string(),
  /** Bearer token for the miner's WebSockets (pool channel and session channels). */
  token: z.string(),
  expires_at: z.number(),
  heartbeat_ms: z.number().int(),
  /** The deployment the miner registered with: its precommits and result writes are signed for this one. */
  router: RouterIdentity,
});
export type MinerRegisterResponse = z.infer<typeof MinerRegisterResponse>;
