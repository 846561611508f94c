import type { MinerView } from "../../durable-objects/pool-miners.ts";
import { listMiners, overview } from "../../durable-objects/pool-shards.ts";
import { oracle } from "../../durable-objects/stubs.ts";
import type { NetworkEvent as SharedNetworkEvent } from "../../shared/views.ts";

// The portal's live network view (GET /api/v1/network/events). What one event carries: the miners as the caller may
// see them (the same pool read as GET /api/v1/miners: its own and the shared sessions only, no prompts anywhere),
// the oracle's block, and figures derived from the miners' public counters. One pool read per owner per interval
// per isolate however many viewers watch (the cache below); the viewers per client IP are capped.

/** What the router sends: the shared event with the pool's whole miner views and its overview's stats. */
export interface NetworkEvent extends SharedNetworkEvent<MinerView> {
  stats: unknown;
}

const cache = new Map<string, { at: number; event: Promise<NetworkEvent> }>();
const viewers = new Map<string, number>();

/** The p-th percentile (nearest rank) of `xs`, null when empty. */
export function percentile(xs: number[], p: number): number | null {
  if (!xs.length) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

async function read(env: Env, owner: string): Promise<NetworkEvent> {
  const [page, figures, clock] = await Promise.all([listMiners(env, owner, 100), overview(env), oracle(env).snapshot()]);
  const latencies = page.nodes
    .filter((m) => m.status !== "offline" && m.reputation.latency_ms !== null)
    .map((m) => m.reputation.latency_ms!);
  return {
    at: Date.now(),
    block: { height: clock.height, interval_ms: clock.interval_ms, at: clock.at },
    connected: figures.connected,
    active_sessions: figures.sessions.active,
    total_sessions: figures.sessions.total,
    miners: page.nodes,
    stats: page.stats,
    results_total: page.nodes.reduce((n, m) => n + m.reputation.tasks, 0),
    latency_ms: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99) },
  };
}

/** The network as `owner` sees it, at most `maxAgeMs` old (shared by every viewer of this isolate). */
export function networkEvent(env: Env, owner: string, maxAgeMs: number): Promise<NetworkEvent> {
  const hit = cache.get(owner);
  if (hit && Date.now() - hit.at < maxAgeMs) return hit.event;
  const event = read(env, owner);
  cache.set(owner, { at: Date.now(), event });
  // A failed read is not kept: the next tick asks again.
  event.catch(() => cache.delete(owner));
  if (cache.size > 1000) cache.delete(cache.keys().next().value!);
  return event;
}

/**
 * Counts a viewer of `ip` in; false when it already has `cap` open streams. Per isolate: Workers spread one client's
 * connections over few isolates, and each stream also ends after its lifetime, so the bound stays small.
 */
export function admitViewer(ip: string, cap: number): boolean {
  const open = viewers.get(ip) ?? 0;
  if (open >= cap) return false;
  viewers.set(ip, open + 1);
  return true;
}

export function releaseViewer(ip: string): void {
  const open = (viewers.get(ip) ?? 1) - 1;
  if (open > 0) viewers.set(ip, open);
  else viewers.delete(ip);
}
