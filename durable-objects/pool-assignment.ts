import type { SessionConfig } from "../shared/views.ts";
import { isShared } from "./tenancy.ts";

// Which online miners serve which sessions: the NodePool's rebalance, as a pure rule. The agent opens one
// WebSocket per session it is told about, so a miner serves at most capacity × MINER_SESSIONS_PER_SLOT sessions
// (else one tenant's thousand sessions would give every miner of the model a thousand sockets, and its own
// per-token rate limit would refuse it). Sessions are served in priority order until their miners are full:
// shared (configured) sessions first, then owned ones taking turns by owner — every owner's first session,
// then every owner's second — so a tenant's many sessions never crowd out another's first.

export const DEFAULT_SESSIONS_PER_SLOT = 32;

/** MINER_SESSIONS_PER_SLOT: sessions a miner serves per unit of declared capacity (a positive integer, else 32). */
export function sessionsPerSlot(env: Pick<Env, "MINER_SESSIONS_PER_SLOT">): number {
  const n = Number(env.MINER_SESSIONS_PER_SLOT);
  return Number.isInteger(n) && n >= 1 ? n : DEFAULT_SESSIONS_PER_SLOT;
}

/** What assignment reads of a session. */
export type CatalogSession = Pick<SessionConfig, "id" | "owner" | "model" | "mode" | "dedicated_miners" | "max_miners" | "created_at">;

export interface PoolMiner {
  address: string;
  models: string[];
  capacity: number;
}

/** Shared sessions (oldest first), then owned ones: each owner's n-th session before anyone's (n+1)-th. */
export function byPriority(sessions: readonly CatalogSession[]): CatalogSession[] {
  const oldest = [...sessions].sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
  const turn = new Map<CatalogSession, number>();
  const seen = new Map<string, number>();
  for (const s of oldest) {
    const n = seen.get(s.owner) ?? 0;
    seen.set(s.owner, n + 1);
    turn.set(s, isShared(s) ? -1 : n);
  }
  return oldest.sort((a, b) => turn.get(a)! - turn.get(b)! || a.created_at - b.created_at);
}

/**
 * Miner → the sessions it serves. A dedicated session takes the miners it lists, an ephemeral one any miner of
 * its model; up to max_miners each, keeping earlier assignments (`before`) where they still fit, then the most
 * reputable (`score`, default 1), least-loaded miners; never more than a miner's cap.
 */
export function planAssignments(input: {
  sessions: readonly CatalogSession[];
  miners: readonly PoolMiner[];
  before: ReadonlyMap<string, readonly string[]>;
  score: ReadonlyMap<string, number>;
  perSlot: number;
}): Map<string, string[]> {
  const { miners, before, score, perSlot } = input;
  const next = new Map<string, string[]>(miners.map((m) => [m.address, []]));
  const load = (m: PoolMiner) => next.get(m.address)!.length;
  const room = (m: PoolMiner) => load(m) < m.capacity * perSlot;
  for (const s of byPriority(input.sessions)) {
    const eligible = miners.filter(
      (m) => m.models.includes(s.model) && (s.mode === "ephemeral" || s.dedicated_miners.includes(m.address)) && room(m),
    );
    const kept = eligible.filter((m) => before.get(m.address)?.includes(s.id));
    const fresh = eligible
      .filter((m) => !kept.includes(m))
      .sort((a, b) => (score.get(b.address) ?? 1) - (score.get(a.address) ?? 1) || load(a) / a.capacity - load(b) / b.capacity);
    for (const m of [...kept, ...fresh].slice(0, s.max_miners)) next.get(m.address)!.push(s.id);
  }
  return next;
}
