import { DurableObject } from "cloudflare:workers";
import { type Hex, verifyMessage } from "viem";
import type { MinerRegisterRequest, ModelContext } from "../shared/api.ts";
import type { Failure } from "../shared/errors.ts";
import { PoolMinerMessage, type PoolServerMessage, parseMessage } from "../shared/protocol.ts";
import { registrationMessage } from "../shared/signing.ts";
import type { SessionConfig } from "../shared/views.ts";
import { bumpEpoch, contextFor, contextsOf, epochIsCurrent, joinAnswer, type SessionJoin, saveContexts } from "./miner-credentials.ts";
import { type MinerClaims, MinerSockets, upgradeClaims } from "./miner-sockets.ts";
import {
  applyOutcomes,
  isBenched,
  type LedgerEntry,
  POOL_MIGRATIONS,
  type Policy,
  type RepCounters,
  type ReplicaOutcome,
  type ReputationView,
  reputation,
} from "./reputation.ts";
import { migrate } from "./session-schema.ts";
import { oracle } from "./stubs.ts";

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
  /** Stake still at risk: declared minus slashed. */
  stake: number;
  reputation: ReputationView;
  /** Rewards minus slashes, tokens. */
  balance: number;
}

export interface SessionSummary {
  id: string;
  name: string;
  active: boolean;
  owner: string;
  model: string;
  mode: SessionConfig["mode"];
  redundancy: number;
  miners_count: number;
  created_at: number;
  updated_at: number;
}

interface MinerRow extends Record<string, SqlStorageValue>, RepCounters {
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
}

interface SessionRow extends Record<string, SqlStorageValue> {
  id: string;
  config: string;
  active: number;
  created_at: number;
  updated_at: number;
}

const CHALLENGE_TTL_MS = 5 * 60_000;

/**
 * The miner registry: wallet identity (proven by a signed challenge), models, device, capacity, heartbeats,
 * and the session catalog. It decides which sessions each miner serves and tells miners over their pool
 * WebSocket. It is not on the task hot path.
 */
export class NodePool extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly sockets: MinerSockets<PoolServerMessage>;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sockets = new MinerSockets(ctx);
    migrate(this.sql, POOL_MIGRATIONS);
  }

  // ── registration ─────────────────────────────────────────────────────────────────────────────────────

  async challenge(address: string): Promise<{ address: string; nonce: string; message: string; expires_at: number }> {
    const now = Date.now();
    const nonce = crypto.randomUUID().replaceAll("-", "");
    const expires_at = now + CHALLENGE_TTL_MS;
    this.sql.exec(`DELETE FROM challenges WHERE expires_at < ?`, now);
    this.sql.exec(`INSERT INTO challenges (nonce, address, expires_at) VALUES (?, ?, ?)`, nonce, address.toLowerCase(), expires_at);
    return { address, nonce, message: registrationMessage(address as Hex, nonce), expires_at };
  }

  /** Verifies the signed challenge (each nonce works once) and records the miner. */
  async register(req: MinerRegisterRequest): Promise<{ ok: true; claims: MinerClaims } | { ok: false; error: Failure }> {
    const address = req.address.toLowerCase();
    const row = this.sql
      .exec<{ address: string; expires_at: number }>(`SELECT address, expires_at FROM challenges WHERE nonce = ?`, req.nonce)
      .toArray()[0];
    if (!row || row.address !== address || row.expires_at < Date.now()) {
      return { ok: false, error: { code: "unauthorized", message: "unknown, expired or foreign challenge nonce" } };
    }
    const valid = await verifyMessage({
      address: req.address as Hex,
      message: registrationMessage(req.address as Hex, req.nonce),
      signature: req.signature as Hex,
    }).catch(() => false);
    if (!valid) return { ok: false, error: { code: "unauthorized", message: "signature does not prove the address" } };
    this.sql.exec(`DELETE FROM challenges WHERE nonce = ?`, req.nonce);
    // Slashes stick to the address: re-registering with the same declared stake does not undo them.
    const slashed = this.sql.exec<{ slashed: number }>(`SELECT slashed FROM miners WHERE address = ?`, address).toArray()[0]?.slashed ?? 0;
    const stake = req.stake ?? 0;
    const { minStake } = this.policy();
    if (stake - slashed < minStake) {
      return {
        ok: false,
        error: {
          code: "forbidden",
          message: `stake ${stake - slashed} is below the pool minimum of ${minStake}`,
          details: { stake, slashed, min_stake: minStake },
        },
      };
    }
    this.sql.exec(
      `INSERT INTO miners (address, name, version, models, device, capacity, registered_at, stake) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET name = excluded.name, version = excluded.version, models = excluded.models,
         device = excluded.device, capacity = excluded.capacity, stake = excluded.stake`,
      address,
      req.name ?? null,
      req.version ?? null,
      JSON.stringify(req.models),
      req.device,
      req.capacity,
      Date.now(),
      stake,
    );
    saveContexts(this.sql, address, req.contexts);
    // A new registration revokes every older token of this miner (they still verify, but no longer connect).
    const epoch = bumpEpoch(this.sql, address);
    return { ok: true, claims: { address, capacity: req.capacity, models: req.models, device: req.device, epoch } };
  }

  /** Whether a token of this epoch is still the miner's current one (miner HTTP calls check it). */
  async tokenCurrent(address: string, epoch: number): Promise<boolean> {
    return epochIsCurrent(this.sql, address.toLowerCase(), epoch);
  }

  /**
   * Revokes every token of the miner and closes its pool channel with 4401 (the agent registers again, so a
   * leaked token is worth nothing); returns the sessions it was assigned to, whose channels the caller closes.
   */
  async revoke(address: string): Promise<string[]> {
    const miner = address.toLowerCase();
    bumpEpoch(this.sql, miner);
    const sessions = this.assignmentsByMiner().get(miner) ?? [];
    for (const { ws } of this.sockets.all().filter((s) => s.claims.address === miner)) ws.close(4401, "token revoked");
    this.rebalance({ exclude: miner });
    return sessions;
  }

  /** A SessionQueue asks whether a miner may join it: its token is current, and the pool assigned it there. */
  async sessionJoin(sessionId: string, address: string, epoch: number): Promise<SessionJoin> {
    return joinAnswer(this.sql, sessionId, address, epoch);
  }

  // ── sessions ─────────────────────────────────────────────────────────────────────────────────────────

  async nextSessionId(): Promise<string> {
    const value = this.sql
      .exec<{ value: number }>(
        `INSERT INTO counters (name, value) VALUES ('session', 1)
         ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value`,
      )
      .one().value;
    return String(value);
  }

  /** Adds a session to the catalog and assigns miners to it. */
  async addSession(config: SessionConfig): Promise<void> {
    const now = Date.now();
    this.sql.exec(
      `INSERT OR IGNORE INTO sessions (id, config, active, created_at, updated_at) VALUES (?, ?, 1, ?, ?)`,
      config.id,
      JSON.stringify(config),
      now,
      now,
    );
    this.rebalance();
  }

  async listSessions(): Promise<SessionSummary[]> {
    return this.sql
      .exec<SessionRow>(`SELECT * FROM sessions ORDER BY created_at`)
      .toArray()
      .map((r) => this.summary(r));
  }

  async getSession(id: string): Promise<SessionSummary | null> {
    const row = this.sql.exec<SessionRow>(`SELECT * FROM sessions WHERE id = ?`, id).toArray()[0];
    return row ? this.summary(row) : null;
  }

  /** Live, unbenched miners of this model and their contexts for it: none means 503 at once, not a wait. */
  async serving(model: string): Promise<{ miners: number; contexts: (ModelContext | null)[] }> {
    const benched = this.benched();
    const live = this.onlineMiners().filter((m) => m.models.includes(model) && !benched.has(m.address));
    return { miners: live.length, contexts: live.map((m) => contextFor(contextsOf(this.sql, m.address), model)) };
  }

  async listMiners(): Promise<MinerView[]> {
    const online = new Set(this.onlineMiners().map((m) => m.address));
    const assigned = this.assignmentsByMiner();
    const policy = this.policy();
    return this.sql
      .exec<MinerRow>(`SELECT * FROM miners ORDER BY registered_at`)
      .toArray()
      .map((r) => {
        const rep = reputation(r);
        const stake = Math.max(0, r.stake - r.slashed);
        return {
          address: r.address,
          name: r.name,
          version: r.version,
          models: JSON.parse(r.models) as string[],
          device: r.device,
          capacity: r.capacity,
          status: !online.has(r.address) ? "offline" : isBenched(stake, rep, policy) ? "benched" : "online",
          sessions: assigned.get(r.address) ?? [],
          registered_at: r.registered_at,
          last_seen: r.last_seen,
          inflight: r.inflight,
          cpu_usage: r.cpu_usage,
          memory_mb: r.memory_mb,
          tokens_per_s: r.tokens_per_s,
          stake,
          reputation: rep,
          balance: r.rewards - r.slashed,
        };
      });
  }

  // ── reputation, stake, ledger ────────────────────────────────────────────────────────────────────────

  /**
   * Outcomes of finished tasks, batched by the SessionQueues; re-plans sessions when someone is (un)benched.
   * Answers with the touched miners' new reputation, so the reporting queue learns of a bench at once.
   */
  async recordOutcomes(outcomes: ReplicaOutcome[]): Promise<Record<string, { score: number; benched: boolean }>> {
    const before = this.benched();
    const rate = this.env.SLASH_FRACTION ? Number(this.env.SLASH_FRACTION) : Number.NaN;
    const touched = applyOutcomes(this.sql, outcomes, rate >= 0 && rate <= 1 ? rate : undefined);
    const after = this.benched();
    if (before.size !== after.size || [...after].some((a) => !before.has(a))) this.rebalance();
    return this.reputations([...touched]);
  }

  /** Score and bench flag per address (unknown addresses are left out), for the SessionQueue's assignment. */
  async reputations(addresses: string[]): Promise<Record<string, { score: number; benched: boolean }>> {
    const policy = this.policy();
    const out: Record<string, { score: number; benched: boolean }> = {};
    for (const address of addresses) {
      const r = this.sql.exec<MinerRow>(`SELECT * FROM miners WHERE address = ?`, address).toArray()[0];
      if (!r) continue;
      const rep = reputation(r);
      out[address] = { score: rep.score, benched: isBenched(Math.max(0, r.stake - r.slashed), rep, policy) };
    }
    return out;
  }

  /** The newest ledger entries of one miner, newest first. */
  async ledger(address: string, limit = 100, before?: number): Promise<LedgerEntry[]> {
    return this.sql
      .exec<LedgerEntry & Record<string, SqlStorageValue>>(
        `SELECT * FROM ledger WHERE miner = ? AND id < ? ORDER BY id DESC LIMIT ?`,
        address.toLowerCase(),
        before ?? Number.MAX_SAFE_INTEGER,
        limit,
      )
      .toArray();
  }

  // ── pool channel ─────────────────────────────────────────────────────────────────────────────────────

  override async fetch(request: Request): Promise<Response> {
    const claims = upgradeClaims(request);
    if (!claims) return new Response("expected a miner WebSocket", { status: 426 });
    if (!epochIsCurrent(this.sql, claims.address, claims.epoch)) {
      const error = { code: "unauthorized", message: "miner token revoked (the miner registered again or was revoked): register again" };
      return Response.json({ error }, { status: 401 });
    }
    const { client, server } = this.sockets.accept(claims);
    const now = Date.now();
    this.sql.exec(`UPDATE miners SET last_seen = ? WHERE address = ?`, now, claims.address);
    const block = (await oracle(this.env).snapshot()).height;
    this.sockets.send(server, { type: "registered", address: claims.address, heartbeat_ms: this.heartbeatMs(), block });
    this.rebalance({ notify: claims.address });
    await this.armStaleCheck();
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, raw: string | ArrayBuffer): Promise<void> {
    const claims = this.sockets.claims(ws)!;
    const msg = parseMessage(PoolMinerMessage, raw);
    if (!msg) return this.sockets.send(ws, { type: "error", code: "invalid_message", message: "message does not match the protocol" });
    this.sql.exec(
      `UPDATE miners SET last_seen = ?, inflight = ?, cpu_usage = ?, memory_mb = ?, tokens_per_s = ? WHERE address = ?`,
      Date.now(),
      msg.inflight,
      msg.cpu_usage,
      msg.memory_mb,
      msg.tokens_per_s ?? null,
      claims.address,
    );
  }

  override async webSocketClose(ws: WebSocket): Promise<void> {
    this.leave(ws);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.leave(ws);
  }

  /** Stale check: a miner whose heartbeats stopped (without a close) leaves the pool. */
  override async alarm(): Promise<void> {
    const cutoff = Date.now() - 3 * this.heartbeatMs();
    for (const { ws, claims } of this.sockets.all()) {
      const row = this.sql
        .exec<{ last_seen: number | null }>(`SELECT last_seen FROM miners WHERE address = ?`, claims.address)
        .toArray()[0];
      if (!row?.last_seen || row.last_seen < cutoff) {
        ws.close(4008, "heartbeat missed");
        this.leave(ws);
      }
    }
    await this.armStaleCheck();
  }

  // ── assignment ───────────────────────────────────────────────────────────────────────────────────────

  private leave(ws: WebSocket): void {
    const claims = this.sockets.claims(ws);
    if (!claims || this.sockets.supersededBy(ws, claims.address)) return;
    this.sql.exec(`UPDATE miners SET inflight = 0 WHERE address = ?`, claims.address);
    this.rebalance({ exclude: claims.address });
  }

  /**
   * Recomputes which online miners serve which sessions: dedicated sessions get their listed miners;
   * ephemeral ones get up to max_miners miners that declare the model, the least-assigned (per unit of
   * capacity) first. Miners whose set changed (and `notify`) are told their full list.
   */
  private rebalance(opts: { exclude?: string; notify?: string } = {}): void {
    const benched = this.benched();
    const score = this.scores();
    const online = this.onlineMiners().filter((m) => m.address !== opts.exclude && !benched.has(m.address));
    const before = this.assignmentsByMiner();
    const count = new Map<string, number>(online.map((m) => [m.address, 0]));
    const next = new Map<string, string[]>(online.map((m) => [m.address, []]));
    const sessions = this.sql.exec<SessionRow>(`SELECT * FROM sessions WHERE active = 1 ORDER BY created_at`).toArray();
    const models = new Map<string, string>();
    for (const row of sessions) {
      const cfg = JSON.parse(row.config) as SessionConfig;
      models.set(cfg.id, cfg.model);
      const eligible = online.filter(
        (m) => m.models.includes(cfg.model) && (cfg.mode === "ephemeral" || cfg.dedicated_miners.includes(m.address)),
      );
      // Keep existing assignments stable; fill up to max_miners with the most reputable, then least-assigned,
      // eligible miners.
      const kept = eligible.filter((m) => before.get(m.address)?.includes(cfg.id));
      const fresh = eligible
        .filter((m) => !kept.includes(m))
        .sort(
          (a, b) =>
            (score.get(b.address) ?? 1) - (score.get(a.address) ?? 1) ||
            count.get(a.address)! / a.capacity - count.get(b.address)! / b.capacity,
        );
      for (const m of [...kept, ...fresh].slice(0, cfg.max_miners)) {
        next.get(m.address)!.push(cfg.id);
        count.set(m.address, count.get(m.address)! + 1);
      }
    }
    const changedSessions = new Set<string>();
    const miners = new Set([...before.keys(), ...next.keys()]);
    for (const miner of miners) {
      const prev = before.get(miner) ?? [];
      const ids = next.get(miner) ?? [];
      for (const id of prev) if (!ids.includes(id)) changedSessions.add(id);
      for (const id of ids) if (!prev.includes(id)) changedSessions.add(id);
      const changed = prev.length !== ids.length || ids.some((id) => !prev.includes(id));
      if (!changed && miner !== opts.notify) continue;
      this.sql.exec(`DELETE FROM assignments WHERE miner = ?`, miner);
      for (const id of ids) this.sql.exec(`INSERT INTO assignments (session_id, miner) VALUES (?, ?)`, id, miner);
      this.sockets.sendTo(miner, { type: "sessions", sessions: ids.map((id) => ({ session_id: id, model: models.get(id)! })) });
    }
    const now = Date.now();
    for (const id of changedSessions) this.sql.exec(`UPDATE sessions SET updated_at = ? WHERE id = ?`, now, id);
  }

  private policy(): Policy {
    return {
      minStake: Number(this.env.MIN_STAKE) || 0,
      floor: Number(this.env.REPUTATION_FLOOR ?? 0.2),
      minTasks: Number(this.env.REPUTATION_MIN_TASKS) || 10,
    };
  }

  private scores(): Map<string, number> {
    return new Map(
      this.sql
        .exec<MinerRow>(`SELECT * FROM miners WHERE tasks > 0`)
        .toArray()
        .map((r) => [r.address, reputation(r).score]),
    );
  }

  /** Addresses of miners that may not be given sessions. */
  private benched(): Set<string> {
    const policy = this.policy();
    const out = new Set<string>();
    for (const r of this.sql.exec<MinerRow>(
      `SELECT * FROM miners WHERE tasks >= ? OR stake - slashed < ?`,
      policy.minTasks,
      policy.minStake,
    )) {
      if (isBenched(Math.max(0, r.stake - r.slashed), reputation(r), policy)) out.add(r.address);
    }
    return out;
  }

  private onlineMiners(): (MinerClaims & { ws: WebSocket })[] {
    return this.sockets.connected().map((m) => ({ ...m.claims, ws: m.ws }));
  }

  private assignmentsByMiner(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const r of this.sql.exec<{ session_id: string; miner: string }>(`SELECT session_id, miner FROM assignments`)) {
      out.set(r.miner, [...(out.get(r.miner) ?? []), r.session_id]);
    }
    return out;
  }

  private summary(row: SessionRow): SessionSummary {
    const cfg = JSON.parse(row.config) as SessionConfig;
    const miners = this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM assignments WHERE session_id = ?`, row.id).one().n;
    return {
      id: row.id,
      name: cfg.name,
      active: row.active === 1,
      owner: cfg.owner,
      model: cfg.model,
      mode: cfg.mode,
      redundancy: cfg.redundancy,
      miners_count: miners,
      created_at: row.created_at,
      updated_at: row.updated_at,
    };
  }

  private heartbeatMs(): number {
    return Number(this.env.HEARTBEAT_MS) || 5000;
  }

  private async armStaleCheck(): Promise<void> {
    if (this.sockets.count() === 0) return;
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + 2 * this.heartbeatMs());
  }
}
