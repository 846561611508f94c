import { defaultEmbeddingModel, defaultThreshold, sharedSessionConfig } from "../../durable-objects/session-queue/config.ts";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import type { CreateSessionBody } from "./schemas.ts";

/** Creates a session: its queue first (so miners told about it find it ready), then the pool's catalog. */
export async function createSession(env: Env, owner: string, body: CreateSessionBody): Promise<SessionConfig> {
  const pool = nodePool(env);
  const id = body.session_id ?? (await pool.nextSessionId());
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
 * by every key (owner `*`); `name` says what the session is for.
 */
export async function ensureConfiguredSession(env: Env, id: string, name: string): Promise<void> {
  const queue = sessionQueue(env, id);
  if (await queue.describe()) return;
  const config = sharedSessionConfig(env, id, name);
  const created = await queue.init(config);
  // A concurrent request may have created it first; either way it exists now.
  if (created.ok || created.error.code === "session_exists") await nodePool(env).addSession(config);
}
