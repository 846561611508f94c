import { z } from "zod";
import { SESSION_ID } from "./schemas.ts";

// POST /api/v1/embeddings: the body, bounded so one request is one `embed` frame to each miner (at most 16 texts)
// and a few milliseconds of a miner's time per text.

/** Texts one request may embed: what one `embed` message carries (shared/protocol.ts EmbedMessage). */
export const MAX_EMBEDDING_INPUTS = 16;
/** UTF-8 bytes per text, and in all. */
export const MAX_EMBEDDING_TEXT_BYTES = 8 * 1024;
export const MAX_EMBEDDING_TOTAL_BYTES = 64 * 1024;

const bytes = (s: string) => new TextEncoder().encode(s).length;
const Text = z
  .string()
  .min(1, "an input text must not be empty")
  .refine((s) => bytes(s) <= MAX_EMBEDDING_TEXT_BYTES, `an input text is at most ${MAX_EMBEDDING_TEXT_BYTES} UTF-8 bytes`);

export const EmbeddingBody = z
  .object({
    /** One text or up to MAX_EMBEDDING_INPUTS of them; the answer keeps their order (`data[].index`). Token arrays are not taken. */
    input: z.union([Text, z.array(Text).min(1).max(MAX_EMBEDDING_INPUTS, `at most ${MAX_EMBEDDING_INPUTS} texts per request`)]),
    /** The network embedding model; default: the session's `embedding_model` (EMBEDDING_MODEL). */
    model: z.string().min(1).max(200).optional(),
    session_id: z.string().regex(SESSION_ID, "session ids are 1–64 letters, digits, '_' or '-'").optional(),
    /** Caps the miners asked below the session's redundancy. */
    max_miners: z.number().int().min(1).max(64).optional(),
    /** Seconds until the job fails with `timeout`. */
    timeout: z.number().positive().max(300).optional(),
    /** OpenAI clients' field: floats only here (the gateway encodes base64 itself). */
    encoding_format: z.literal("float").optional(),
    /** OpenAI clients' end-user id: accepted, not used. */
    user: z.string().max(256).optional(),
  })
  .refine((b) => (typeof b.input === "string" ? [b.input] : b.input).reduce((n, t) => n + bytes(t), 0) <= MAX_EMBEDDING_TOTAL_BYTES, {
    message: `the input texts are at most ${MAX_EMBEDDING_TOTAL_BYTES} UTF-8 bytes in all`,
    path: ["input"],
  });
export type EmbeddingBody = z.infer<typeof EmbeddingBody>;
