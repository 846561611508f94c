import { defaultEmbeddingModel, defaultThreshold, sharedSessionConfig } from "../../durable-objects/session-queue/config.ts";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import { isShared } from "../../durable-objects/tenancy.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import type { CreateSessionBody } from "./schemas.ts";
import { rememberSession, reservedBy } from "./tenancy.ts";

export const DEFAULT_MAX_DEPOSIT = 100_000_000;

/** MAX_SESSION_DEPOSIT: the most tokens an owner may deposit for a session of its own (no payments yet). */
export function maxDeposit(env: Env): number {
  const n = Number(env.MAX_SESSION_DEPOSIT);
  return env.MAX_SESSION_DEPOSIT && Number.isFinite(n) && n >= 0 ? n : DEFAULT_MAX_DEPOSIT;
}

/** Refuses what no owner may create: a configured shared session's id, a deposit above the cap. */
function checkCreate(env: Env, body: CreateSessionBody): void {
  const reserved = body.session_id ? reservedBy(env, body.session_id) : undefined;
  if (reserved) {
    throw new ApiError(
      "forbidden",
      `session id ${body.session_id} is reserved: ${reserved} configures it as a session shared by every key, created on first use`,
      { session_id: body.session_id!, var: reserved },
    );
  }
  const cap = maxDeposit(env);
  if (body.deposit > cap) {
    throw new ApiError("invalid_request", `deposit ${body.deposit} exceeds the cap of ${cap} tokens (MAX_SESSION_DEPOSIT)`, [
      { path: "deposit", message: `at most ${cap} tokens` },
    ]);
  }
}

/**
 * A generated session id: 128 random bits in base64url (22 characters), so no one can guess the id another
 * tenant's next session gets, nor claim it first.
 */
export function randomSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** Attempts at a generated id before giving up (each collision is a 2^-128 event, or someone's bug). */
const ID_ATTEMPTS = 4;

/**
 * Creates a session: the pool claims the id within the owner's quota (pool-catalog.ts), then the queue is made
 * (so miners told about the session find it ready), then the pool's catalog takes it. A generated id that turns
 * out taken is drawn again; a chosen one answers 409 `session_exists`.
 */
export async function createSession(env: Env, owner: string, body: CreateSessionBody): Promise<SessionConfig> {
  checkCreate(env, body);
  const pool = nodePool(env);
  const { session_id: chosen, ...rest } = body;
  for (let attempt = 1; ; attempt++) {
    const id = chosen ?? randomSessionId();
    const retry = !chosen && attempt < ID_ATTEMPTS;
    if (!chosen && reservedBy(env, id)) continue;
    const refused = await pool.claimSession(id, owner);
    if (refused?.code === "session_exists" && retry) continue;
    if (refused) throw ApiError.from(refused);
    const config: SessionConfig = {
      ...rest,
      id,
      owner,
      model: body.model ?? env.DEFAULT_MODEL,
      dispersion_threshold: body.dispersion_threshold ?? defaultThreshold(env),
      embedding_model: body.embedding_model ?? defaultEmbeddingModel(env),
      dedicated_miners: body.dedicated_miners.map((a) => a.toLowerCase()),
      created_at: Date.now(),
    };
    const created = await sessionQueue(env, id).init(config);
    if (!created.ok) {
      await pool.releaseSessionClaim(id);
      if (created.error.code === "session_exists" && retry) continue;
      throw ApiError.from(created.error);
    }
    await pool.addSession(config);
    rememberSession(id);
    return config;
  }
}

/**
 * Configured sessions (DEFAULT_SESSION_ID, the work pools, the factcheck modes) are created on first use, shared
 * by every key (owner `*`); `name` says what the session is for. Their ids are reserved: no key creates them.
 */
export async function ensureConfiguredSession(
  env: Env,
  id: string,
  name: string,
  defaults: { model?: string; redundancy?: number; max_miners?: number } = {},
): Promise<void> {
  const queue = sessionQueue(env, id);
  const existing = await queue.describe();
  // A key claimed this id before it was reserved (state from older code): say so, rather than "unknown session".
  if (existing && !isShared(existing.config)) {
    throw new ApiError(
      "configuration_error",
      `configured session ${id} is owned by an API key, not shared; remove it or configure another id`,
      {
        session_id: id,
      },
    );
  }
  if (existing) return;
  const base = sharedSessionConfig(env, id, name);
  const config = {
    ...base,
    model: defaults.model ?? base.model,
    redundancy: defaults.redundancy ?? base.redundancy,
    max_miners: defaults.max_miners ?? base.max_miners,
  };
  const created = await queue.init(config);
  // A concurrent request may have created it first; either way it exists now.
  if (created.ok || created.error.code === "session_exists") {
    await nodePool(env).addSession(config);
    rememberSession(id);
  }
}
