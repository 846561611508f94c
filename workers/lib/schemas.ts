import { z } from "zod";
import { VerifyOption } from "../../shared/generation.ts";
import { TaskId } from "../../shared/task-id.ts";

// Request bodies at the route edge. Field names follow what Cortensor clients send.

export const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SessionId = z.string().regex(SESSION_ID, "session ids are 1–64 letters, digits, '_' or '-'");
const Address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address");

export const SessionParam = z.object({ sessionId: SessionId });
export const AddressParam = z.object({ address: Address });
export const TaskParam = z.object({ sessionId: SessionId, taskId: TaskId });

const Stop = z
  .union([z.string().min(1).max(64), z.array(z.string().min(1).max(64)).max(8)])
  .transform((s) => (typeof s === "string" ? [s] : s));

export const CompletionBody = z.object({
  session_id: z.union([SessionId, z.number().int().nonnegative().transform(String)]).optional(),
  prompt: z.string().min(1, "prompt must not be empty").max(262_144, "prompts over 256 KiB go through v2/v3 (off-chain)"),
  prompt_type: z.union([z.literal(0), z.literal(1)]).default(0),
  prompt_template: z.string().max(8192).optional(),
  stream: z.boolean().default(false),
  /** Seconds until the task fails with `timeout`. */
  timeout: z.number().positive().max(300).optional(),
  /** Seconds a miner has from assignment to its precommit before it is replaced. */
  precommit_timeout: z.number().positive().max(300).optional(),
  max_tokens: z.number().int().min(1).max(4096).default(128),
  /** 0 (the default) decodes greedily, which makes replicas agree exactly. */
  temperature: z.number().min(0).max(2).default(0),
  top_p: z.number().gt(0).max(1).default(1),
  top_k: z.number().int().min(0).max(1000).default(0),
  presence_penalty: z.number().min(-2).max(2).default(0),
  frequency_penalty: z.number().min(-2).max(2).default(0),
  stop: Stop.optional(),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  client_reference: z.string().max(256).optional(),
  /** Verified sampling for this task: `true` checks every token, `{fraction}` spot-checks that share (README). */
  verify: z
    .union([z.boolean(), VerifyOption])
    .optional()
    .transform((v) => (v === true ? { fraction: 1 } : v || undefined)),
  max_miners: z.number().int().min(1).max(64).optional(),
  model: z.string().max(200).optional(),
});
export type CompletionBody = z.infer<typeof CompletionBody>;

/** Session metadata: small, flat JSON (it is stored with the session and shown in its config). */
export const METADATA_MAX_KEYS = 32;
export const METADATA_MAX_BYTES = 4096;
const Metadata = z
  .record(z.string().min(1).max(64), z.union([z.string().max(1024), z.number(), z.boolean(), z.null()]))
  .refine((m) => Object.keys(m).length <= METADATA_MAX_KEYS, `metadata has at most ${METADATA_MAX_KEYS} keys`)
  .refine(
    (m) => new TextEncoder().encode(JSON.stringify(m)).length <= METADATA_MAX_BYTES,
    `metadata is at most ${METADATA_MAX_BYTES} bytes of JSON`,
  );

export const CreateSessionBody = z
  .object({
    session_id: SessionId.optional(),
    name: z.string().max(100).default(""),
    metadata: Metadata.default({}),
    model: z.string().min(1).max(200).optional(),
    min_miners: z.number().int().min(1).max(64).default(1),
    max_miners: z.number().int().min(1).max(64).default(8),
    redundancy: z.number().int().min(1).max(9).default(1),
    /** Validators asked to embed outputs for similarity consensus (0 means one). */
    validator_count: z.number().int().min(0).max(16).default(0),
    /** exact: identical hashes only; auto: exact, else similarity; similarity: independent samples judged by embeddings. */
    consensus: z.enum(["auto", "exact", "similarity", "verify"]).default("auto"),
    /** Answer a redundant task without a quorum (flagged best_effort) instead of failing it 409 no_consensus. */
    best_effort: z.boolean().default(false),
    /** Cosine distance from the consensus output beyond which a replica is an outlier. */
    dispersion_threshold: z.number().gt(0).max(2).optional(),
    embedding_model: z.string().min(1).max(200).optional(),
    mode: z.enum(["ephemeral", "dedicated"]).default("ephemeral"),
    dedicated_miners: z.array(Address).max(64).default([]),
    /** Seconds. */
    task_timeout: z.number().min(1).max(300).default(60),
    ack_timeout: z.number().min(0.1).max(60).default(5),
    /** LLM tokens the session's tasks draw on. */
    deposit: z.number().int().min(0).max(1e12),
  })
  .superRefine((b, ctx) => {
    if (b.min_miners > b.max_miners) ctx.addIssue({ code: "custom", path: ["min_miners"], message: "min_miners exceeds max_miners" });
    if (b.redundancy > b.max_miners) ctx.addIssue({ code: "custom", path: ["redundancy"], message: "redundancy exceeds max_miners" });
    if (b.mode === "dedicated" && b.dedicated_miners.length === 0) {
      ctx.addIssue({ code: "custom", path: ["dedicated_miners"], message: "dedicated sessions list their miners" });
    }
  });
export type CreateSessionBody = z.infer<typeof CreateSessionBody>;

/** A page of sessions or miners: `before` is the last id (session id or miner address) of the previous page. */
export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  /** A session id, or a miner address (which the session-id pattern admits too). */
  before: SessionId.optional(),
});

export const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** A task (or ledger entry) id: canonical decimal only, like every id in a route. */
  before: TaskId.transform(Number).optional(),
});
