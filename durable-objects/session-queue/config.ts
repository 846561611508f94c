import type { DepositRecord, SessionConfig } from "../../shared/views.ts";
import { DEFAULT_DISPERSION_THRESHOLD, DEFAULT_EMBEDDING_MODEL } from "../similarity.ts";

// Session settings and their defaults, in one place: the router fills them when it creates a session, the
// SessionQueue fills what a session stored before a setting existed.

export const defaultThreshold = (env: Env) => Number(env.DISPERSION_THRESHOLD) || DEFAULT_DISPERSION_THRESHOLD;
export const defaultEmbeddingModel = (env: Env) => env.EMBEDDING_MODEL || DEFAULT_EMBEDDING_MODEL;

/** Fills settings a session stored before they existed. */
export function withDefaults(c: SessionConfig, env: Env): SessionConfig {
  return {
    ...c,
    consensus: c.consensus ?? "auto",
    dispersion_threshold: c.dispersion_threshold ?? defaultThreshold(env),
    embedding_model: c.embedding_model ?? defaultEmbeddingModel(env),
    validator_count: c.validator_count ?? 0,
    best_effort: c.best_effort ?? false,
  };
}

/**
 * A configured session created on first use (the default session, the delegate/validate/factcheck pools):
 * shared by every key (owner `*`), ephemeral, DEFAULT_REDUNDANCY miners.
 */
export function sharedSessionConfig(env: Env, id: string, name: string): SessionConfig {
  return {
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
    best_effort: false,
    dispersion_threshold: defaultThreshold(env),
    embedding_model: defaultEmbeddingModel(env),
    mode: "ephemeral",
    dedicated_miners: [],
    task_timeout: 60,
    ack_timeout: (Number(env.ACK_TIMEOUT_MS) || 5000) / 1000,
    deposit: Number(env.DEFAULT_SESSION_DEPOSIT) || 0,
    created_at: Date.now(),
  };
}

/** Deposit records a session keeps (its first, the grant, and the latest paid ones). */
export const MAX_DEPOSIT_RECORDS = 100;

/** The session's deposits so far: those recorded, else the grant it was created with. */
export function depositsOf(c: SessionConfig): DepositRecord[] {
  return c.deposits ?? [{ source: "granted", tokens: c.deposit, at: c.created_at }];
}

/** The config with a paid deposit added to its tokens and its record kept. */
export function withDeposit(c: SessionConfig, entry: DepositRecord): SessionConfig {
  const [grant, ...paid] = [...depositsOf(c), entry];
  return { ...c, deposit: c.deposit + entry.tokens, deposits: [grant, ...paid.slice(-(MAX_DEPOSIT_RECORDS - 1))] };
}
