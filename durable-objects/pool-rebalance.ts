import type { PoolServerMessage } from "../shared/protocol.ts";
import type { MinerSockets } from "./miner-sockets.ts";
import { type PoolMiner, planAssignments } from "./pool-assignment.ts";
import { activeSessions, setMinerCounts } from "./pool-catalog.ts";

// The NodePool's rebalance, applied: plans which of its online miners serve which of its sessions
// (pool-assignment.ts), writes the assignments that changed before telling those miners (and `notify`) their
// full list, and records the changed sessions' miner counts. In a sharded pool it runs inside one shard, over
// that shard's miners and its share of each session (pool-shares.ts).

export function assignmentsByMiner(sql: SqlStorage): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const r of sql.exec<{ session_id: string; miner: string }>(`SELECT session_id, miner FROM assignments`)) {
    out.set(r.miner, [...(out.get(r.miner) ?? []), r.session_id]);
  }
  return out;
}

export function applyRebalance(
  sql: SqlStorage,
  sockets: MinerSockets<PoolServerMessage>,
  input: { online: readonly PoolMiner[]; notify: ReadonlySet<string>; score: ReadonlyMap<string, number>; perSlot: number },
): void {
  const before = assignmentsByMiner(sql);
  const sessions = activeSessions(sql);
  const next = planAssignments({ sessions, miners: input.online, before, score: input.score, perSlot: input.perSlot });
  const models = new Map(sessions.map((s) => [s.id, s.model]));
  const changed = new Set<string>();
  for (const miner of new Set([...before.keys(), ...next.keys()])) {
    const prev = before.get(miner) ?? [];
    const ids = next.get(miner) ?? [];
    for (const id of [...prev.filter((x) => !ids.includes(x)), ...ids.filter((x) => !prev.includes(x))]) changed.add(id);
    const same = prev.length === ids.length && ids.every((id) => prev.includes(id));
    if (same && !input.notify.has(miner)) continue;
    sql.exec(`DELETE FROM assignments WHERE miner = ?`, miner);
    for (const id of ids) sql.exec(`INSERT INTO assignments (session_id, miner) VALUES (?, ?)`, id, miner);
    sockets.sendTo(miner, { type: "sessions", sessions: ids.map((id) => ({ session_id: id, model: models.get(id)! })) });
  }
  const counts = new Map([...changed].map((id) => [id, 0]));
  for (const ids of next.values()) for (const id of ids) if (counts.has(id)) counts.set(id, counts.get(id)! + 1);
  setMinerCounts(sql, counts, Date.now());
}
