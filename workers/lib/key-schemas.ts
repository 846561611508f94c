import { z } from "zod";
import type { KeyRecord } from "../../durable-objects/key-registry.ts";
import { OWNER, RESERVED_OWNERS } from "./secrets.ts";

// Bodies, queries and views of the key admin API (routes/admin.ts), self-service (routes/keys.ts) and usage
// (routes/usage.ts). Times go out as unix seconds, as OpenAI's API writes them; they come in as unix seconds or
// ISO 8601.

const MAX_BUDGET = 1e12;

/** Unix seconds or an ISO 8601 date-time, as unix milliseconds. */
const Instant = z
  .union([z.number().int().positive().max(1e11), z.iso.datetime({ offset: true })])
  .transform((v) => (typeof v === "number" ? v * 1000 : Date.parse(v)));

/** A query's instant: unix seconds or ISO 8601 (as text). */
const QueryInstant = z
  .string()
  .max(40)
  .transform((v, ctx) => {
    const ms = /^\d{1,11}$/.test(v) ? Number(v) * 1000 : Date.parse(v);
    if (Number.isNaN(ms)) ctx.addIssue({ code: "custom", message: "expected unix seconds or an ISO 8601 date-time" });
    return ms;
  });

export const KeyIdParam = z.object({ id: z.string().regex(/^[0-9a-f]{16}$/, "key ids are 16 hex digits") });

/** A new key's settings (self-service: all optional, within the creating key's, durable-objects/key-registry.ts). */
export const KeySettings = z.strictObject({
  name: z.string().min(1).max(64).default("key"),
  /** When the key stops working. */
  expires_at: Instant.optional(),
  /** Model names (public gateway names, aliases or network ids); absent: every model. */
  allowed_models: z.array(z.string().min(1).max(200)).min(1).max(64).optional(),
  /** Requests per minute. */
  rate_limit: z.number().int().min(1).max(1_000_000).optional(),
  /** Charged tokens (prompt + completion) in all. */
  token_budget: z.number().int().min(0).max(MAX_BUDGET).optional(),
});
export type KeySettings = z.infer<typeof KeySettings>;

export const AdminKeyBody = KeySettings.extend({
  owner: z
    .string()
    .regex(OWNER, "owners are 1–64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit")
    .refine((o) => !RESERVED_OWNERS.has(o), "this owner name is reserved for the router's keyless routes (trial, x402)"),
});

/** An admin's change of a key's settings: a field set to null lifts that limit. */
export const AdminKeyPatch = z.strictObject({
  name: z.string().min(1).max(64).optional(),
  expires_at: Instant.nullable().optional(),
  allowed_models: z.array(z.string().min(1).max(200)).min(1).max(64).nullable().optional(),
  rate_limit: z.number().int().min(1).max(1_000_000).nullable().optional(),
  token_budget: z.number().int().min(0).max(MAX_BUDGET).nullable().optional(),
});

export const AdminKeyQuery = z.object({ owner: z.string().regex(OWNER).optional() });

export const UsageQuery = z.strictObject({
  key_id: z.string().max(64).optional(),
  model: z.string().max(200).optional(),
  bucket: z.enum(["minute", "day"]).default("day"),
  /** Default: 24 hours (bucket minute) or 30 days (bucket day) before `to`. */
  from: QueryInstant.optional(),
  /** Default: now. */
  to: QueryInstant.optional(),
});

export const AdminUsageQuery = UsageQuery.extend({ owner: z.string().regex(OWNER).optional() });

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

/** A key as the API shows it (never its hash or material). */
export function keyView(k: KeyRecord) {
  return {
    object: "api_key" as const,
    id: k.id,
    owner: k.owner,
    name: k.name,
    prefix: k.prefix,
    created_at: seconds(k.created_at),
    expires_at: seconds(k.expires_at),
    revoked_at: seconds(k.revoked_at),
    rotated_at: seconds(k.rotated_at),
    allowed_models: k.allowed_models,
    rate_limit: k.rate_limit,
    token_budget: k.token_budget,
    tokens_used: k.tokens_used,
    created_by: k.created_by,
  };
}
