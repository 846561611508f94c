import type { SessionSummary } from "../../durable-objects/node-pool.ts";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import { seesSession } from "../../durable-objects/tenancy.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { modelMapSession } from "../gateway/model-map.ts";
import { ApiError } from "./api-error.ts";

// The router's side of the ownership rule (durable-objects/tenancy.ts: an owned session is its owner's alone, a
// shared session's tasks each their submitter's). The SessionQueue applies it to what it holds, the NodePool to
// its catalog pages and miners' session lists; here it is applied to what the router reads elsewhere — catalog
// pages once more, and the ledger — and a session id reaches a SessionQueue only when the catalog has it, so a
// made-up id creates no Durable Object.

type Queue = ReturnType<typeof sessionQueue>;

// ── the catalog gate ──────────────────────────────────────────────────────────────────────────────────────

/** Ids this isolate found in the catalog. Sessions are never deleted, so an entry never goes stale. */
const known = new Set<string>();
const KNOWN_MAX = 10_000;
/**
 * Ids the catalog did not have, and when that was learnt: a made-up id costs one NodePool call per isolate per
 * UNKNOWN_TTL_MS, not one per request. Bounded (oldest out first); the isolate that creates a session drops its
 * entry at once (rememberSession), others may answer 404 for an id created elsewhere for up to the TTL — only
 * an id someone asked for before it existed, which a generated id never is.
 */
const unknown = new Map<string, number>();
export const UNKNOWN_MAX = 4096;
export const UNKNOWN_TTL_MS = 5_000;

/** Whether the pool's catalog has this session: asked once per isolate and id, then remembered. */
export async function inCatalog(env: Env, id: string): Promise<boolean> {
  if (known.has(id)) return true;
  const missedAt = unknown.get(id);
  if (missedAt !== undefined && Date.now() - missedAt < UNKNOWN_TTL_MS) return false;
  unknown.delete(id);
  if (!(await nodePool(env).getSession(id))) {
    if (unknown.size >= UNKNOWN_MAX) unknown.delete(unknown.keys().next().value!);
    unknown.set(id, Date.now());
    return false;
  }
  rememberSession(id);
  return true;
}

/** A session this isolate just created (or found): known from now on. */
export function rememberSession(id: string): void {
  unknown.delete(id);
  if (known.size >= KNOWN_MAX) known.clear();
  known.add(id);
}

/** The queue of a session in the catalog, else null (and no Durable Object touched). */
export async function catalogQueue(env: Env, id: string): Promise<Queue | null> {
  return (await inCatalog(env, id)) ? sessionQueue(env, id) : null;
}

/**
 * A session `caller` may use and, given `taskId`, whose task it may see: its queue and settings. Anything else
 * is 404 (`session_not_found` / `task_not_found`), the answer an id nobody has gets.
 */
export async function visibleSession(
  env: Env,
  sessionId: string,
  caller: string,
  taskId?: string,
): Promise<{ queue: Queue; config: SessionConfig }> {
  const queue = await catalogQueue(env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  const access = await queue.access(caller, taskId);
  if (!access.ok) throw ApiError.from(access.error);
  return { queue, config: access.config };
}

// ── reserved ids ──────────────────────────────────────────────────────────────────────────────────────────

const CONFIGURED = [
  "DEFAULT_SESSION_ID",
  "DELEGATE_SESSION_POOL",
  "VALIDATE_SESSION_POOL",
  "FACTCHECK_STANDARD_SESSION",
  "FACTCHECK_REALTIME_SESSION",
  "TRIAL_SESSION_ID",
] as const;

/**
 * The var that configures `id` as a shared session, if one does: such ids are created on first use (owner `*`)
 * and no API key may create or claim them first.
 */
export function reservedBy(env: Env, id: string): (typeof CONFIGURED)[number] | "MODEL_MAP" | undefined {
  if (!id) return undefined;
  // The gateway's model map configures session pools too (workers/gateway/model-map.ts).
  if (modelMapSession(env, id)) return "MODEL_MAP";
  return CONFIGURED.find((name) =>
    (env[name] ?? "")
      .split(",")
      .map((s) => s.trim())
      .includes(id),
  );
}

// ── what the pool shows ───────────────────────────────────────────────────────────────────────────────────

/** The catalog as `caller` sees it: its own sessions and the shared ones. */
export function sessionsSeenBy(list: SessionSummary[], caller: string): SessionSummary[] {
  return list.filter((s) => seesSession(s, caller));
}

export type LedgerLine = Omit<LedgerEntry, "owner" | "session_id" | "task_id"> & { session_id: string | null; task_id: string | null };

/**
 * A miner's ledger as `caller` sees it: what the miner earned or lost, when and why, stays (its accounts are
 * public); where — the session and task ids — only on entries of the caller's own tasks. Owners are never shown.
 */
export function ledgerSeenBy(entries: LedgerEntry[], caller: string): LedgerLine[] {
  return entries.map(({ owner, ...e }) => (owner === caller ? e : { ...e, session_id: null, task_id: null }));
}
