import { defaultEmbeddingModel, defaultThreshold, sharedSessionConfig } from "../../durable-objects/session-queue/config.ts";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import { isShared } from "../../durable-objects/tenancy.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import type { CreateSessionBody } from "./schemas.ts";
import { reservedBy } from "./tenancy.ts";

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

/** Creates a session: its queue first (so miners told about it find it ready), then the pool's catalog. */
export async function createSession(env: Env, owner: string, body: CreateSessionBody): Promise<SessionConfig> {
  checkCreate(env, body);
  const pool = nodePool(env);
  let id = body.session_id ?? (await pool.nextSessionId());
  // A generated id never lands on a reserved one (a configured id may well be a number).
  while (!body.session_id && reservedBy(env, id)) id = await pool.nextSessionId();
  const { session_id: _, ...rest } = body;
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
  if (!created.ok) throw ApiError.from(created.error);
  await pool.addSession(config);
  return config;
}

/**
 * Configured sessions (DEFAULT_SESSION_ID, the work pools, the factcheck modes) are created on first use, shared
 * by every key (owner `*`); `name` says what the session is for. Their ids are reserved: no key creates them.
 */
export async function ensureConfiguredSession(env: Env, id: string, name: string): Promise<void> {
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
  const config = sharedSessionConfig(env, id, name);
  const created = await queue.init(config);
  // A concurrent request may have created it first; either way it exists now.
  if (created.ok || created.error.code === "session_exists") await nodePool(env).addSession(config);
}
