import type { MinerSocket } from "../miner-sockets.ts";
import type { OpenTask } from "./task.ts";
import { sawFailedOutput } from "./verify-dispute.ts";

// Which connected miners a SessionQueue gives work to: never a benched one; among those with spare capacity,
// the least loaded (per unit of capacity) first, then the most reputable. Load counts live replicas here;
// reputation comes from the NodePool, refreshed when a miner connects and at most every REPUTATION_TTL_MS.

/** How stale the pool's reputation map may get before pump asks for a fresh one (off the hot path). */
const REPUTATION_TTL_MS = 5_000;

export interface Standing {
  score: number;
  benched: boolean;
}

export class MinerLoad {
  private readonly load = new Map<string, number>();
  private reputation = new Map<string, Standing>();
  private reputationAt = 0;
  private loading: Promise<void> | null = null;
  private readonly fetchStanding: (addresses: string[]) => Promise<Record<string, Standing>>;
  private readonly refreshed: () => void;

  /** `refreshed` runs after each reputation refresh (benches may have lifted, so work may move). */
  constructor(fetchStanding: (addresses: string[]) => Promise<Record<string, Standing>>, refreshed: () => void) {
    this.fetchStanding = fetchStanding;
    this.refreshed = refreshed;
  }

  bump(miner: string, delta: number): void {
    this.load.set(miner, Math.max(0, (this.load.get(miner) ?? 0) + delta));
  }

  ratio(m: MinerSocket): number {
    return (this.load.get(m.claims.address) ?? 0) / m.claims.capacity;
  }

  benched(address: string): boolean {
    return this.reputation.get(address)?.benched === true;
  }

  /** The pool's answer to an outcome report: a bench takes effect at once. */
  update(standing: Record<string, Standing>): void {
    for (const [miner, s] of Object.entries(standing)) this.reputation.set(miner, s);
  }

  /** Whether the reputation map is old enough to refresh. */
  stale(now: number): boolean {
    return now - this.reputationAt > REPUTATION_TTL_MS;
  }

  /** Up to `need` miners for more replicas of the task, best first (a validator of a failed output of it last: verify-dispute.ts). */
  pick(task: OpenTask, miners: readonly MinerSocket[], need: number): MinerSocket[] {
    const score = (m: MinerSocket) => this.reputation.get(m.claims.address)?.score ?? 1;
    const seen = sawFailedOutput(task);
    const saw = (m: MinerSocket) => (seen.has(m.claims.address) ? 1 : 0);
    return miners
      .filter((m) => !task.replicas.has(m.claims.address) && (this.load.get(m.claims.address) ?? 0) < m.claims.capacity)
      .sort((a, b) => saw(a) - saw(b) || this.ratio(a) - this.ratio(b) || score(b) - score(a))
      .slice(0, need);
  }

  /** Fetches the pool's reputation of these miners; concurrent callers share one request. */
  refresh(addresses: string[]): Promise<void> {
    this.loading ??= this.fetchStanding(addresses)
      .then((map) => {
        this.reputation = new Map(Object.entries(map));
        this.reputationAt = Date.now();
        this.refreshed();
      })
      .catch((err) => console.error(`reputation refresh failed: ${String(err)}`))
      .finally(() => (this.loading = null));
    return this.loading;
  }
}
