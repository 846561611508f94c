import { DEFAULT_DISPERSION_THRESHOLD, DEFAULT_EMBEDDING_MODEL } from "../../durable-objects/similarity.ts";
import type { SessionConfig } from "../../shared/views.ts";
import type { Env } from "../env.ts";
import { ApiError } from "./api-error.ts";
import type { CreateSessionBody } from "./schemas.ts";
import { nodePool, sessionQueue } from "./stubs.ts";

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

/** The configured default session is created on first use, shared by every key (owner `*`). */
export async function ensureDefaultSession(env: Env, id: string, name = "default"): Promise<void> {
  const queue = sessionQueue(env, id);
  if (await queue.describe()) return;
  const config: SessionConfig = {
    id,
    name,
    owner: "*",
    metadata: {},
    model: env.DEFAULT_MODEL,
    min_miners: 1,
    max_miners: 64,
    redundancy: Number(env.DEFAULT_REDUNDANCY) || 1,
    validator_count: 0,
    consensus: "auto",
    dispersion_threshold: defaultThreshold(env),
    embedding_model: defaultEmbeddingModel(env),
    mode: "ephemeral",
    dedicated_miners: [],
    task_timeout: 60,
    ack_timeout: (Number(env.ACK_TIMEOUT_MS) || 5000) / 1000,
    deposit: Number(env.DEFAULT_SESSION_DEPOSIT) || 0,
    created_at: Date.now(),
  };
  const created = await queue.init(config);
  // A concurrent request may have created it first; either way it exists now.
  if (created.ok || created.error.code === "session_exists") await nodePool(env).addSession(config);
}

const defaultThreshold = (env: Env) => Number(env.DISPERSION_THRESHOLD) || DEFAULT_DISPERSION_THRESHOLD;
const defaultEmbeddingModel = (env: Env) => env.EMBEDDING_MODEL || DEFAULT_EMBEDDING_MODEL;
