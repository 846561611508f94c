import { z } from "zod";
import { GenerationParams, MAX_TOKENS_LIMIT, PromptSpec } from "./generation.ts";
import { PayloadDescriptor } from "./payloads.ts";
import { TaskId } from "./task-id.ts";

// Every WebSocket message between router and miner. Both ends parse with these unions and reject the rest.
// Two channels: the pool channel (miner ↔ NodePool: heartbeats, session membership) and one session channel
// per session the miner serves (miner ↔ SessionQueue: the task lifecycle).

/**
 * 2: a precommit may carry its commit (`precommit.commit`), so both are handled in one event and written in one
 * transaction. A miner folds them only for a router whose welcome says ≥ 2; two frames stay valid.
 */
export const PROTOCOL_VERSION = 2;
/** The first protocol whose routers take a precommit with its commit folded in. */
export const FOLDED_COMMIT_PROTOCOL = 2;

/**
 * A miner's text is bounded by its task: at most TEXT_BYTES_PER_TOKEN UTF-8 bytes per completion token, so a
 * commit (or a replica's stream) holds at most max_tokens × 64 bytes. Model-independent and generous: the
 * built-in tokenizer's longest token is 13 bytes, a lone byte token decodes to a 3-byte replacement character.
 * The frames themselves are bounded for the largest task (MAX_TOKENS_LIMIT tokens).
 */
export const TEXT_BYTES_PER_TOKEN = 64;
export const MAX_RESULT_TEXT = MAX_TOKENS_LIMIT * TEXT_BYTES_PER_TOKEN;
/** The longest session frame a miner may send (a full-size commit with JSON escapes, or 16 embeddings). */
export const MAX_MINER_FRAME_CHARS = 2 * 1024 * 1024;

const Hex = z.string().regex(/^0x[0-9a-fA-F]*$/);
const Hash = z.string().regex(/^0x[0-9a-fA-F]{64}$/);
const SessionId = z.string().min(1).max(64);

// ── session channel ────────────────────────────────────────────────────────────────────────────────────

export const AssignMessage = z.object({
  type: z.literal("assign"),
  session_id: SessionId,
  task_id: TaskId,
  model: z.string(),
  input: PromptSpec,
  params: GenerationParams,
  /** Whether the router wants token messages (only when a client streams). */
  stream: z.boolean(),
  /** Off-chain / private task (v2/v3): where the prompt is, whether it is encrypted, where the result goes. */
  payload: PayloadDescriptor.optional(),
  /** Absolute epoch-ms deadlines for this replica's phases. */
  ack_deadline: z.number(),
  commit_deadline: z.number(),
  block: z.number().int(),
});

/** Validation work: embed each text with `model` (feature extraction, mean pooling, L2-normalised). */
export const EmbedMessage = z.object({
  type: z.literal("embed"),
  task_id: TaskId,
  model: z.string(),
  texts: z.array(z.string()).min(1).max(16),
  deadline: z.number(),
});
export type EmbedMessage = z.infer<typeof EmbedMessage>;

/** A token id as the protocol carries it (vocabularies up to 2^24). */
const TokenIds = z
  .array(
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 24),
  )
  .max(MAX_TOKENS_LIMIT);

/**
 * A private verified task's token ids, sealed under the task key (uint32 little-endian, kind `token_ids`), base64:
 * the router passes them to allowlisted validators without reading them.
 */
const SealedTokenIds = z.string().max(Math.ceil(((4 * MAX_TOKENS_LIMIT + 64) * 4) / 3));

/**
 * Validation work for verified sampling: re-score `token_ids` (a replica's completion) after the prompt in one
 * forward pass of `model` and re-run the task's decoding policy at `positions` (absent: every position).
 * The validator answers `verification` (or `verify_failed`); durable-objects/session-queue/verify-round.ts.
 */
export const VerifyMessage = z.object({
  type: z.literal("verify"),
  session_id: SessionId,
  task_id: TaskId,
  model: z.string(),
  input: PromptSpec,
  params: GenerationParams,
  /** Off-chain prompt: the validator fetches it like a replica (the router lets an asked validator). */
  payload: PayloadDescriptor.optional(),
  /** The completion's ids; a private task's come sealed instead, with the count the replica claimed. */
  token_ids: TokenIds.optional(),
  token_ids_sealed: SealedTokenIds.optional(),
  completion_tokens: z.number().int().min(0).max(MAX_TOKENS_LIMIT).optional(),
  finish_reason: z.enum(["stop", "length"]),
  positions: z.array(z.number().int().min(0)).max(MAX_TOKENS_LIMIT).optional(),
  deadline: z.number(),
});
export type VerifyMessage = z.infer<typeof VerifyMessage>;

/** One position a validator could not reproduce: `token` committed, `expected` recomputed (-1: none / stop). */
export const VerifyFailure = z.object({
  pos: z.number().int().min(-1),
  token: z.number().int().min(-1),
  expected: z.number().int().min(-1),
  margin: z.number(),
});
export type VerifyFailure = z.infer<typeof VerifyFailure>;

export const SessionServerMessage = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("welcome"),
    session_id: SessionId,
    miner: z.string(),
    model: z.string(),
    block: z.number().int(),
    protocol: z.number().int(),
  }),
  AssignMessage,
  z.object({ type: z.literal("cancel"), task_id: TaskId, reason: z.string() }),
  EmbedMessage,
  VerifyMessage,
  z.object({ type: z.literal("error"), code: z.string(), message: z.string(), task_id: TaskId.optional() }),
]);
export type SessionServerMessage = z.infer<typeof SessionServerMessage>;
export type AssignMessage = z.infer<typeof AssignMessage>;

export const Usage = z.object({
  prompt_tokens: z.number().int().min(0),
  completion_tokens: z.number().int().min(0),
});

const CommitMessage = z.object({
  type: z.literal("commit"),
  task_id: TaskId,
  text: z.string().max(MAX_RESULT_TEXT),
  finish_reason: z.enum(["stop", "length"]),
  usage: Usage,
  /** The miner's own inference time, so the router can report its added latency. */
  inference_ms: z.number().min(0),
  /** From receiving the assignment to the first generated token, as the miner measured it. */
  first_token_ms: z.number().min(0).optional(),
  /** The result was written off-chain (`POST /api/v3/offchain/result`); `text` is then empty. */
  result_urn: z.string().max(300).optional(),
  /** Verified tasks: the completion's token ids (EOS included), which validators re-score. */
  token_ids: TokenIds.optional(),
  /** Private verified tasks: the same ids sealed under the task key, for allowlisted validators only. */
  token_ids_sealed: SealedTokenIds.optional(),
});

export const SessionMinerMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ack"), task_id: TaskId }),
  z.object({ type: z.literal("token"), task_id: TaskId, seq: z.number().int().min(0), text: z.string().max(MAX_RESULT_TEXT) }),
  /**
   * `hash` is the commitment (shared/signing.ts `commitmentHash`: session, task, miner, result hash), signed.
   * `commit` (protocol ≥ 2): the same task's commit, handled right after the precommit as if it came next.
   */
  z.object({ type: z.literal("precommit"), task_id: TaskId, hash: Hash, signature: Hex, commit: CommitMessage.optional() }),
  CommitMessage,
  /** A validator's answer to `embed`: one vector per text, in order. */
  z.object({
    type: z.literal("embeddings"),
    task_id: TaskId,
    model: z.string(),
    vectors: z.array(z.array(z.number()).max(4096)).max(16),
  }),
  /**
   * A validator's answer to `verify`: the hash of the text the token ids decode to (stops applied), the prompt's
   * token count, the positions checked, the failures (the first 64) and the margin statistics.
   */
  z.object({
    type: z.literal("verification"),
    task_id: TaskId,
    text_hash: Hash,
    prompt_tokens: z.number().int().min(0),
    checked: z.number().int().min(0),
    failed: z.number().int().min(0),
    failures: z.array(VerifyFailure).max(64),
    near_ties: z.number().int().min(0),
    min_margin: z.number().nullable(),
  }),
  z.object({ type: z.literal("verify_failed"), task_id: TaskId, reason: z.string().max(500) }),
  /** A validator that cannot do the embedding (model unavailable, error); another is asked. */
  z.object({ type: z.literal("embed_failed"), task_id: TaskId, reason: z.string().max(500) }),
  /**
   * Hands a task back (shutdown, engine error); the SessionQueue reassigns it. `code` says why in a way the
   * queue acts on: `context_length_exceeded` (the prompt does not fit the miner's model) fails the task once
   * every connected miner has said so.
   */
  z.object({
    type: z.literal("release"),
    task_id: TaskId,
    reason: z.string().max(500),
    code: z.enum(["context_length_exceeded"]).optional(),
  }),
]);
export type SessionMinerMessage = z.infer<typeof SessionMinerMessage>;

// ── pool channel ───────────────────────────────────────────────────────────────────────────────────────

export const PoolServerMessage = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("registered"),
    address: z.string(),
    heartbeat_ms: z.number().int(),
    block: z.number().int(),
    /** The pool answers POOL_PING without waking (absent: an older router; send the JSON heartbeat only). */
    ping: z.boolean().optional(),
  }),
  /** The full list of sessions this miner should serve; the miner connects to new ones, leaves the rest. */
  z.object({
    type: z.literal("sessions"),
    sessions: z.array(z.object({ session_id: SessionId, model: z.string() })),
  }),
  /** `overloaded` (the pool sheds heartbeats) carries the longer interval to send at. */
  z.object({ type: z.literal("error"), code: z.string(), message: z.string(), heartbeat_ms: z.number().int().optional() }),
]);
export type PoolServerMessage = z.infer<typeof PoolServerMessage>;

/**
 * Heartbeat figures are bounded, so a miner cannot put absurd numbers (1e308 MB) into /status and /miners:
 * cpu_usage is the agent's percentage of one machine, memory up to 16 TiB, at most 100,000 tasks in flight and
 * 10 million tokens a second. A frame out of range gets the protocol error and changes nothing.
 */
export const HEARTBEAT_LIMITS = { cpu_usage: 100, memory_mb: 16 * 1024 * 1024, inflight: 100_000, tokens_per_s: 10_000_000 } as const;

/**
 * Liveness that does not wake the pool: a miner sends POOL_PING every heartbeat interval and the runtime answers
 * POOL_PONG itself (the NodePool's WebSocket auto-response), so no pool code runs for it. The JSON heartbeat
 * with the figures follows when they change, and at least every HEARTBEAT_FULL_EVERY-th interval.
 */
export const POOL_PING = '{"type":"ping"}';
export const POOL_PONG = '{"type":"pong"}';
export const HEARTBEAT_FULL_EVERY = 12;

export const PoolMinerMessage = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("heartbeat"),
    inflight: z.number().int().min(0).max(HEARTBEAT_LIMITS.inflight),
    cpu_usage: z.number().min(0).max(HEARTBEAT_LIMITS.cpu_usage),
    memory_mb: z.number().min(0).max(HEARTBEAT_LIMITS.memory_mb),
    tokens_per_s: z.number().min(0).max(HEARTBEAT_LIMITS.tokens_per_s).optional(),
  }),
]);
export type PoolMinerMessage = z.infer<typeof PoolMinerMessage>;

/** Parses one text frame with a union; returns null for anything malformed (or longer than `maxChars`, unparsed). */
export function parseMessage<T>(schema: z.ZodType<T>, raw: string | ArrayBuffer, maxChars = Number.POSITIVE_INFINITY): T | null {
  if (typeof raw !== "string" || raw.length > maxChars) return null;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : null;
}
