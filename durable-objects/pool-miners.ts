import { catalogCounts } from "./pool-catalog.ts";
import { isBenched, type Policy, type RepCounters, type ReputationView, reputation, stakeAtRisk } from "./reputation.ts";
import { seesSession } from "./tenancy.ts";

// The NodePool's miner registry as the router shows it: pages of miners newest first (`before`: the last address
// of the previous page), each with the sessions the caller may see among those it serves (durable-objects/
// tenancy.ts), and the network's figures counted here, so no route needs the whole list.

export interface MinerView {
  address: string;
  name: string | null;
  version: string | null;
  models: string[];
  device: string;
  capacity: number;
  /** benched: connected but given no sessions (reputation below the floor, or stake below the minimum). */
  status: "online" | "offline" | "benched";
  sessions: string[];
  registered_at: number;
  last_seen: number | null;
  inflight: number;
  cpu_usage: number | null;
  memory_mb: number | null;
  tokens_per_s: number | null;
  /**
   * Stake still at risk, tUSD base units: the miner's active stake on chain (read at registration, refreshed) or,
   * without a chain (development only), the declared one — less the slashes not yet reflected in that figure.
   */
  stake: number;
  /** Where `stake` comes from: the staking contract, or the miner's own declaration (development without a chain). */
  stake_source: "chain" | "declared";
  reputation: ReputationView;
  /** Rewards minus slashes, tokens. */
  balance: number;
}

export interface MinerRow extends Record<string, SqlStorageValue>, RepCounters {
  address: string;
  name: string | null;
  version: string | null;
  models: string;
  device: string;
  capacity: number;
  registered_at: number;
  last_seen: number | null;
  inflight: number;
  cpu_usage: number | null;
  memory_mb: number | null;
  tokens_per_s: number | null;
  stake: number;
  slashed: number;
  rewards: number;
  stake_source: string;
  stake_block: number;
  stake_checked_at: number;
  /** Slashes `stake` does not reflect yet (reputation.ts `stakeAtRisk`). */
  unsettled: number;
}

/** Who is connected, and the bench rule. */
export interface Presence {
  online: ReadonlySet<string>;
  policy: Policy;
}

/** What a connected miner's figures need of its row (a narrow read: the summary runs on every stale-check alarm). */
export type ConnectedRow = Pick<
  MinerRow,
  "address" | "device" | "capacity" | "inflight" | "cpu_usage" | "memory_mb" | "stake" | "unsettled" | keyof RepCounters
> & {
  contexts?: string | null;
};
const CONNECTED_COLUMNS =
  "address, device, capacity, inflight, cpu_usage, memory_mb, stake, unsettled, tasks, agreed, outliers, slashes, timeouts, latency_ms, contexts";

const stakeOf = (r: ConnectedRow) => stakeAtRisk(r);

export function statusOf(r: ConnectedRow, p: Presence): MinerView["status"] {
  if (!p.online.has(r.address)) return "offline";
  return isBenched(stakeOf(r), reputation(r), p.policy) ? "benched" : "online";
}

/** Each miner's sessions that `caller` may see (null: every session). */
function sessionsOf(sql: SqlStorage, addresses: string[], caller: string | null): Map<string, string[]> {
  const out = new Map<string, string[]>(addresses.map((a) => [a, []]));
  const rows = sql.exec<{ miner: string; session_id: string; owner: string }>(
    `SELECT a.miner, a.session_id, s.owner FROM assignments a JOIN sessions s ON s.id = a.session_id
     WHERE a.miner IN (SELECT value FROM json_each(?)) ORDER BY s.rowid`,
    JSON.stringify(addresses),
  );
  for (const r of rows) if (caller === null || seesSession(r, caller)) out.get(r.miner)?.push(r.session_id);
  return out;
}

function views(sql: SqlStorage, rows: MinerRow[], p: Presence, caller: string | null): MinerView[] {
  const sessions = sessionsOf(
    sql,
    rows.map((r) => r.address),
    caller,
  );
  return rows.map((r) => ({
    address: r.address,
    name: r.name,
    version: r.version,
    models: JSON.parse(r.models) as string[],
    device: r.device,
    capacity: r.capacity,
    status: statusOf(r, p),
    sessions: sessions.get(r.address) ?? [],
    registered_at: r.registered_at,
    last_seen: r.last_seen,
    inflight: r.inflight,
    cpu_usage: r.cpu_usage,
    memory_mb: r.memory_mb,
    tokens_per_s: r.tokens_per_s,
    stake: stakeOf(r),
    stake_source: r.stake_source === "chain" ? "chain" : "declared",
    reputation: reputation(r),
    balance: r.rewards - r.slashed,
  }));
}

/** One page of miners, newest registration first, after the miner `before` (unknown: an empty page). */
export function minerPage(
  sql: SqlStorage,
  p: Presence,
  caller: string,
  limit: number,
  before?: string,
): { nodes: MinerView[]; next_before: string | null } {
  const rows = (
    before
      ? sql.exec<MinerRow>(
          `SELECT * FROM miners WHERE rowid < (SELECT rowid FROM miners WHERE address = ?) ORDER BY rowid DESC LIMIT ?`,
          before.toLowerCase(),
          limit + 1,
        )
      : sql.exec<MinerRow>(`SELECT * FROM miners ORDER BY rowid DESC LIMIT ?`, limit + 1)
  ).toArray();
  const nodes = views(sql, rows.slice(0, limit), p, caller);
  return { nodes, next_before: rows.length > limit ? nodes[nodes.length - 1].address : null };
}

/** The named miners (unknown addresses left out); `caller` null shows no session ids. */
export function minerViews(sql: SqlStorage, p: Presence, addresses: string[], caller: string | null): MinerView[] {
  const rows = sql
    .exec<MinerRow>(
      `SELECT * FROM miners WHERE address IN (SELECT value FROM json_each(?))`,
      JSON.stringify(addresses.map((a) => a.toLowerCase())),
    )
    .toArray();
  const out = views(sql, rows, p, caller ?? "");
  return caller === null ? out.map((v) => ({ ...v, sessions: [] })) : out;
}

export interface MinerStats {
  total: number;
  online: number;
  benched: number;
  offline: number;
  capacity: number;
  inflight: number;
  by_device: Record<string, number>;
}

/**
 * The connected miners' rows, read once by a caller that needs both minerStats and networkOverview: the columns
 * those need, and a plain scan filtered here when most registered miners are connected (the usual shard), which
 * costs less than looking each address up.
 */
export function connectedRows(sql: SqlStorage, p: Presence): ConnectedRow[] {
  type Row = ConnectedRow & Record<string, SqlStorageValue>;
  const total = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM miners`).one().n;
  if (p.online.size * 2 >= total)
    return sql
      .exec<Row>(`SELECT ${CONNECTED_COLUMNS} FROM miners`)
      .toArray()
      .filter((r) => p.online.has(r.address));
  return sql
    .exec<Row>(`SELECT ${CONNECTED_COLUMNS} FROM miners WHERE address IN (SELECT value FROM json_each(?))`, JSON.stringify([...p.online]))
    .toArray();
}

/** Figures over every registered miner: counted here, whatever page a caller reads. */
export function minerStats(sql: SqlStorage, p: Presence, connected: ConnectedRow[] = connectedRows(sql, p)): MinerStats {
  const total = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM miners`).one().n;
  const online = connected.filter((r) => statusOf(r, p) === "online");
  const benched = connected.length - online.length;
  return {
    total,
    online: online.length,
    benched,
    offline: total - connected.length,
    capacity: online.reduce((a, r) => a + r.capacity, 0),
    inflight: online.reduce((a, r) => a + r.inflight, 0),
    by_device: Object.fromEntries(["cpu", "webgpu"].map((d) => [d, online.filter((r) => r.device === d).length])),
  };
}

/** What /info and /status show: catalog counts and the connected miners' figures (benched ones included). */
export function networkOverview(sql: SqlStorage, p: Presence, connected: ConnectedRow[] = connectedRows(sql, p)) {
  const cpu = connected.map((r) => r.cpu_usage).filter((v): v is number => v !== null);
  const dedicated = sql
    .exec<{ n: number }>(
      `SELECT COUNT(DISTINCT a.miner) AS n FROM assignments a JOIN sessions s ON s.id = a.session_id
       WHERE json_extract(s.config, '$.mode') = 'dedicated' AND a.miner IN (SELECT value FROM json_each(?))`,
      JSON.stringify(connected.map((r) => r.address)),
    )
    .one().n;
  return {
    sessions: catalogCounts(sql),
    connected: connected.length,
    dedicated,
    cpu_usage: cpu.length ? cpu.reduce((a, b) => a + b, 0) / cpu.length : 0,
    memory_mb: connected.reduce((a, r) => a + (r.memory_mb ?? 0), 0),
  };
}
