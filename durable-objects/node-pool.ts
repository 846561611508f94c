import { DurableObject } from "cloudflare:workers";
import type { MinerRegisterRequest, ModelContext } from "../shared/api.ts";
import type { Failure } from "../shared/errors.ts";
import { POOL_PING, POOL_PONG, PoolMinerMessage, type PoolServerMessage, parseMessage } from "../shared/protocol.ts";
import type { RouterIdentity } from "../shared/signing.ts";
import type { SessionConfig } from "../shared/views.ts";
import { backgroundChain } from "./chain-stake.ts";
import { bumpEpoch, channelSessions, contextFor, contextsOf, epochIsCurrent, joinAnswer, type SessionJoin } from "./miner-credentials.ts";
import { type MinerClaims, MinerSockets, upgradeClaims } from "./miner-sockets.ts";
import { BlockClock } from "./oracle.ts";
import { type CatalogSession, sessionsPerSlot } from "./pool-assignment.ts";
import {
  catalogCounts,
  claimSession,
  insertSession,
  releaseClaim,
  type SessionSummary,
  sessionPage,
  sessionQuota,
  sessionSummary,
} from "./pool-catalog.ts";
import { ShardDirectory, type ShardSummary } from "./pool-directory.ts";
import { type ExportAnswer, PoolHandover } from "./pool-handover.ts";
import { PoolLiveness, phasedAt, staleCloseCap } from "./pool-liveness.ts";
import {
  type MinerRow,
  type MinerStats,
  type MinerView,
  minerPage,
  minerStats,
  minerViews,
  networkOverview,
  type Presence,
} from "./pool-miners.ts";
import { benchedMiners, poolPolicy, reputationScores } from "./pool-policy.ts";
import { applyRebalance } from "./pool-rebalance.ts";
import { type Challenge, issueChallenge, registerMiner } from "./pool-registration.ts";
import { RouterKeyBusy, ShardLink } from "./pool-shard-link.ts";
import { hostSession, setShares, shardSummary } from "./pool-shard-summary.ts";
import { poolShard, poolShards } from "./pool-shards.ts";
import { type FaucetOutcome, grantFaucet, refreshStakes } from "./pool-stake.ts";
import { Summary } from "./pool-summary.ts";
import {
  applyOutcomes,
  isBenched,
  type LedgerEntry,
  POOL_MIGRATIONS,
  type Policy,
  type ReplicaOutcome,
  reputation,
  stakeAtRisk,
} from "./reputation.ts";
import { migrate } from "./session-schema.ts";
import { pumpSlashes } from "./slash-submitter.ts";
import { oracle } from "./stubs.ts";

export type { MinerView, SessionSummary };

/** A slash waits this long for others to share its batch transaction. */
const SLASH_BATCH_MS = 1_000;
/** Connects and leaves within this long share one rebalance (a mass reconnect costs O(miners) per batch, not per miner). */
const REBALANCE_MS = 200;

/**
 * The miner registry: wallet identity (proven by a signed challenge), models, device, capacity, heartbeats,
 * and the session catalog. It decides which sessions each miner serves and tells miners over their pool
 * WebSocket. It is not on the task hot path. With POOL_SHARDS > 1 (pool-shards.ts) one class, two roles: each
 * shard "pool-k" holds its miners and a replica of the sessions with its share of them; "pool" holds the
 * catalog and the shards' summaries (pool-directory.ts).
 */
export class NodePool extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly sockets: MinerSockets<PoolServerMessage>;
  /** Heartbeat figures and liveness in memory, written in batches (pool-liveness.ts). */
  private readonly live: PoolLiveness;
  private readonly stats = new Summary<MinerStats>();
  private readonly figures = new Summary<ReturnType<typeof networkOverview>>();
  /** Connected miners, kept as they come and go (seeded from the sockets after a wake). */
  private connectedSet: Set<string> | null = null;
  private readonly pending = {
    exclude: new Set<string>(),
    notify: new Set<string>(),
    timer: undefined as ReturnType<typeof setTimeout> | undefined,
  };
  /** The block height from one oracle snapshot (heights follow from genesis and interval), not an oracle call per connect. */
  private readonly clock: BlockClock;
  private clockLoaded: Promise<void> | null = null;
  private staleArmed = false;
  /** When the alarm was due (null: not known since the wake). */
  private alarmDue: number | null = null;
  /** With POOL_SHARDS > 1: the directory's state (this object is "pool") or the link to it (a shard). */
  private readonly directory: ShardDirectory;
  private readonly shard: ShardLink;
  /** While POOL_SHARDS_FROM is set: miners' state moving from their old shard (pool-handover.ts). */
  private readonly handover = new PoolHandover(this.ctx, this.env);

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sockets = new MinerSockets(ctx);
    this.live = new PoolLiveness(ctx);
    this.clock = new BlockClock(
      () => oracle(env).snapshot(),
      (p) => ctx.waitUntil(p),
    );
    migrate(this.sql, POOL_MIGRATIONS);
    const shards = poolShards(env);
    this.directory = new ShardDirectory(ctx.storage, shards);
    this.shard = new ShardLink(ctx, env, shards, {
      summary: (now) => this.summarize(now),
      sessions: () => catalogCounts(this.sql).active,
      catchUp: (catalog) => {
        for (const { config, share } of catalog) hostSession(this.sql, config, share, Date.now());
        this.rebalance();
      },
      routerKey: (holder, take) => this.routerKey(holder, take),
    });
    // Liveness pings are answered by the runtime without waking this object; the stale check reads their times.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(POOL_PING, POOL_PONG));
  }

  // ── registration ─────────────────────────────────────────────────────────────────────────────────────

  /** A one-time nonce and the message to sign for it, naming this deployment (`router`: its identity and origin). */
  async challenge(address: string, router: RouterIdentity): Promise<Challenge> {
    return issueChallenge(this.sql, address, router);
  }

  /** Verifies the signed challenge (each nonce works once, signed for this deployment) and records the miner. */
  async register(
    req: MinerRegisterRequest,
    router: RouterIdentity,
  ): Promise<{ ok: true; claims: MinerClaims } | { ok: false; error: Failure }> {
    return registerMiner(this.sql, this.env, req, router, this.policy(), (a) => this.handover.adopt(a));
  }

  // Pool handover (pool-handover.ts), shard to shard only: no route reaches these.
  /** Old shard: the miner's state for its new shard `to`, marked moved here; its sockets here close. */
  async handoverExport(address: string, to: string, after: number): Promise<ExportAnswer> {
    const out = this.handover.export(address, to, after);
    if (out.ok && out.state && after === 0) {
      for (const s of this.sockets.all()) if (s.claims.address === address.toLowerCase()) s.ws.close(4401, "moved to another pool shard");
    }
    return out;
  }

  /** Old shard: deletes the miner once `to` says it holds it. */
  async handoverConfirm(address: string, to: string): Promise<boolean> {
    return this.handover.release(address, to);
  }

  /** New shard: it holds the miner, pulled from `from`. */
  async handoverHolds(address: string, from: string): Promise<boolean> {
    return this.handover.holds(address, from);
  }

  /** Old shard: miners here not handed over yet (the operator's progress). */
  async handoverLeft(): Promise<{ left: number; unconfirmed: number }> {
    return this.handover.left();
  }

  /** Whether a token of this epoch is still the miner's current one (miner HTTP calls check it). */
  async tokenCurrent(address: string, epoch: number): Promise<boolean> {
    return epochIsCurrent(this.sql, address.toLowerCase(), epoch);
  }

  /**
   * Revokes every token of the miner and closes its pool channel with 4401 (the agent registers again, so a
   * leaked token is worth nothing). Returns the new epoch (tokens below it are revoked) and every session where
   * the miner may hold a channel — assigned, or joined to finish work it held there — which the caller closes.
   */
  async revoke(address: string): Promise<{ sessions: string[]; epoch: number }> {
    const miner = address.toLowerCase();
    const epoch = bumpEpoch(this.sql, miner);
    const sessions = channelSessions(this.sql, miner);
    for (const { ws } of this.sockets.all().filter((s) => s.claims.address === miner)) ws.close(4401, "token revoked");
    this.online().delete(miner);
    this.rebalance({ exclude: miner });
    return { sessions, epoch };
  }

  /** A SessionQueue asks whether a miner may join it: its token is current, and the pool assigned it there. */
  async sessionJoin(sessionId: string, address: string, epoch: number): Promise<SessionJoin> {
    return joinAnswer(this.sql, sessionId, address, epoch);
  }

  // ── sessions ─────────────────────────────────────────────────────────────────────────────────────────

  /** Reserves a session id for `owner` within MAX_SESSIONS_PER_OWNER (pool-catalog.ts); addSession completes it. */
  async claimSession(id: string, owner: string): Promise<Failure | null> {
    return claimSession(this.sql, id, owner, sessionQuota(this.env), Date.now());
  }

  /** Drops a claim whose session was not created. */
  async releaseSessionClaim(id: string): Promise<void> {
    releaseClaim(this.sql, id);
  }

  /** Adds a session to the catalog and assigns miners to it (sharded: each shard its share of max_miners). */
  async addSession(config: SessionConfig): Promise<void> {
    insertSession(this.sql, config, Date.now());
    if (poolShards(this.env) === 1) return this.rebalance();
    const shares = await this.directory.sharesFor(config);
    await Promise.all(shares.map((share, k) => poolShard(this.env, k).hostSession(config, share)));
  }

  // ── a sharded pool (pool-shards.ts): the directory's side, then the shards' ─────────────────────────

  /** A shard's summary (pool-directory.ts); answers the catalog's active sessions so a shard that missed one asks. */
  async shardSummary(k: number, summary: ShardSummary): Promise<{ sessions: number }> {
    const changed = await this.directory.record(k, summary, Date.now());
    for (const [shard, shares] of changed) {
      this.ctx.waitUntil(
        poolShard(this.env, shard)
          .setShares(shares)
          .catch((err) => console.error(`shares for shard ${shard}: ${String(err)}`)),
      );
    }
    return { sessions: catalogCounts(this.sql).active };
  }

  async shardCatalog(k: number): Promise<{ config: CatalogSession; share: number }[]> {
    return this.directory.catalogFor(k);
  }

  async shardedServing(model: string): Promise<{ miners: number; contexts: (ModelContext | null)[] }> {
    return this.directory.serving(model);
  }

  async shardedStats(): Promise<MinerStats> {
    return this.directory.stats();
  }

  async shardedOverview(): Promise<ReturnType<typeof networkOverview>> {
    return this.directory.overview();
  }

  /** The router-key lease: take (true: granted) or give back. */
  async routerKey(holder: string, take: boolean): Promise<boolean> {
    if (take) return this.directory.acquire(holder, Date.now());
    await this.directory.release(holder);
    return false;
  }

  /** A shard takes a session with its share of max_miners (pool-shard-summary.ts), or a new share. */
  async hostSession(config: CatalogSession, share: number): Promise<void> {
    hostSession(this.sql, config, share, Date.now());
    this.rebalance();
  }

  async setShares(shares: Record<string, number>): Promise<void> {
    if (setShares(this.sql, shares)) this.rebalance();
  }

  /** The miners this shard assigns to a session. */
  async sessionMembers(sessionId: string): Promise<string[]> {
    return this.sql
      .exec<{ miner: string }>(`SELECT miner FROM assignments WHERE session_id = ?`, sessionId)
      .toArray()
      .map((r) => r.miner);
  }

  private summarize(now: number): ShardSummary {
    this.live.flush();
    return shardSummary(this.sql, this.presence(), this.onlineMiners(), now);
  }

  /** A page of the sessions `caller` sees, newest first (pool-catalog.ts). */
  async listSessions(caller: string, limit = 100, before?: string): Promise<{ sessions: SessionSummary[]; next_before: string | null }> {
    return sessionPage(this.sql, caller, limit, before);
  }

  async getSession(id: string): Promise<SessionSummary | null> {
    return sessionSummary(this.sql, id);
  }

  /** Live, unbenched miners of this model and their contexts for it: none means 503 at once, not a wait. */
  async serving(model: string): Promise<{ miners: number; contexts: (ModelContext | null)[] }> {
    const benched = this.benched();
    const live = this.onlineMiners().filter((m) => m.models.includes(model) && !benched.has(m.address));
    return { miners: live.length, contexts: live.map((m) => contextFor(contextsOf(this.sql, m.address), model)) };
  }

  /** A page of miners, newest first, each with the sessions `caller` sees (pool-miners.ts), and the pool's figures. */
  async listMiners(
    caller: string,
    limit = 100,
    before?: string,
  ): Promise<{ nodes: MinerView[]; next_before: string | null; stats: MinerStats }> {
    const page = await this.minerPage(caller, limit, before);
    return { ...page, stats: this.stats.get(Date.now(), () => minerStats(this.sql, this.presence())) };
  }

  /** A page without the figures: a sharded listing takes those from the directory (pool-shards.ts). */
  async minerPage(caller: string, limit = 100, before?: string): Promise<{ nodes: MinerView[]; next_before: string | null }> {
    this.live.flush();
    const page = minerPage(this.sql, this.presence(), caller, limit, before);
    return { ...page, nodes: page.nodes.map((n) => this.withPing(n)) };
  }

  /** The named miners (no session ids unless `caller` is given). */
  async minerViews(addresses: string[], caller: string | null = null): Promise<MinerView[]> {
    this.live.flush();
    return minerViews(this.sql, this.presence(), addresses, caller).map((n) => this.withPing(n));
  }

  /** Catalog counts and the connected miners' figures, for /info and /status (a summary at most a second old). */
  async overview(): Promise<ReturnType<typeof networkOverview>> {
    this.live.flush();
    return this.figures.get(Date.now(), () => networkOverview(this.sql, this.presence()));
  }

  /** last_seen counts the miner's latest liveness ping, which is written sparsely (pool-liveness.ts). */
  private withPing(n: MinerView): MinerView {
    const ping = n.status === "offline" ? 0 : this.live.lastPing(n.address);
    return ping > (n.last_seen ?? 0) ? { ...n, last_seen: ping } : n;
  }

  // ── reputation, stake, ledger ────────────────────────────────────────────────────────────────────────

  /**
   * Outcomes of finished tasks, batched by the SessionQueues; re-plans sessions when someone is (un)benched.
   * Answers with the touched miners' new reputation, so the reporting queue learns of a bench at once.
   */
  async recordOutcomes(outcomes: ReplicaOutcome[]): Promise<Record<string, { score: number; benched: boolean }>> {
    await this.handover.adoptAll(outcomes.map((o) => o.miner));
    const before = this.benched();
    const rate = this.env.SLASH_FRACTION ? Number(this.env.SLASH_FRACTION) : Number.NaN;
    const touched = applyOutcomes(this.sql, outcomes, rate >= 0 && rate <= 1 ? rate : undefined);
    if (backgroundChain(this.env) && outcomes.some((o) => o.outcome === "rejected")) await this.armAlarm(Date.now() + SLASH_BATCH_MS);
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
      out[address] = { score: rep.score, benched: isBenched(stakeAtRisk(r), rep, policy) };
    }
    return out;
  }

  /** The newest ledger entries of one miner, newest first (slashes with their way to the chain: status, tx_hash). */
  async ledger(address: string, limit = 100, before?: number): Promise<LedgerEntry[]> {
    return this.sql
      .exec<LedgerEntry & Record<string, SqlStorageValue>>(
        `SELECT id, miner, session_id, task_id, owner, kind, amount, reason, at, block, status, tx_hash, evidence_hash
         FROM ledger WHERE miner = ? AND id < ? ORDER BY id DESC LIMIT ?`,
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
    const now = Date.now();
    // Shedding: a reconnect storm past the budget is told to come back (the agent retries with backoff).
    if (!this.live.connects.admit(now)) {
      const error = {
        code: "rate_limited",
        message: "the pool is taking more connects than it can: retry shortly",
        details: { retry_after_s: 1 },
      };
      return Response.json({ error }, { status: 429, headers: { "Retry-After": "1" } });
    }
    const { client, server } = this.sockets.accept(claims);
    this.live.touch(claims.address, now);
    this.online().add(claims.address);
    this.stats.changed(now);
    this.figures.changed(now);
    const registered = {
      type: "registered",
      address: claims.address,
      heartbeat_ms: this.heartbeatMs(),
      block: await this.block(),
      ping: true,
    } as const;
    this.sockets.send(server, registered);
    this.rebalanceSoon({ notify: claims.address });
    await this.armStaleCheck();
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A heartbeat updates memory only (pool-liveness.ts writes it in batches); past the frame budget it is shed. */
  override async webSocketMessage(ws: WebSocket, raw: string | ArrayBuffer): Promise<void> {
    const claims = this.sockets.claims(ws)!;
    const now = Date.now();
    if (!this.live.frames.admit(now)) return this.shed(ws, claims.address, now);
    const msg = parseMessage(PoolMinerMessage, raw);
    if (!msg) return this.sockets.send(ws, { type: "error", code: "invalid_message", message: "message does not match the protocol" });
    const { inflight, cpu_usage, memory_mb } = msg;
    this.live.heartbeat(claims.address, { inflight, cpu_usage, memory_mb, tokens_per_s: msg.tokens_per_s ?? null }, now);
  }

  /**
   * Over the budget a frame is not parsed: the miner counts as alive, its figures wait for a later heartbeat.
   * Once a minute it is told so, with a longer interval to send at (an agent that knows pings uses them).
   */
  private shed(ws: WebSocket, address: string, now: number): void {
    this.live.touch(address, now);
    if (!this.live.firstShed(address, now)) return;
    const message = "pool overloaded: heartbeat figures dropped, liveness kept; send the liveness ping, heartbeat less often";
    this.sockets.send(ws, { type: "error", code: "overloaded", message, heartbeat_ms: 2 * this.heartbeatMs() });
  }

  private async block(): Promise<number> {
    this.clockLoaded ??= this.clock.load().catch((err) => {
      this.clockLoaded = null;
      throw err;
    });
    await this.clockLoaded;
    return this.clock.height(Date.now());
  }

  override async webSocketClose(ws: WebSocket): Promise<void> {
    this.leave(ws);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.leave(ws);
  }

  /**
   * Stale check: a miner whose heartbeats stopped (without a close) leaves the pool. With a chain, also the slash
   * queue (durable-objects/slash-submitter.ts) and the refresh of connected miners' stake (older than STAKE_TTL_MS).
   */
  override async alarm(): Promise<void> {
    this.staleArmed = false;
    // An alarm that runs late waited behind the same queue as the miners' frames: their silence is that lag.
    const late = this.alarmDue === null ? 0 : Math.max(0, Date.now() - this.alarmDue);
    this.alarmDue = null;
    this.staleCheck(late);
    if (this.pending.timer) this.rebalance();
    const cfg = backgroundChain(this.env);
    let next: number | null = null;
    if (cfg) {
      const before = this.benched();
      // Another shard holding the router key: this one's slashes wait for its next pass.
      const pumped = await this.withRouterKey(() => pumpSlashes(this.sql, this.env, cfg, this.env.PAYLOADS)).catch((err: unknown) => {
        if (err instanceof RouterKeyBusy) return { next: Date.now() + SLASH_BATCH_MS };
        throw err;
      });
      next = pumped.next;
      await refreshStakes(this.sql, cfg, [...this.presence().online]);
      const after = this.benched();
      if (before.size !== after.size || [...after].some((a) => !before.has(a))) this.rebalance();
    }
    this.ctx.waitUntil(this.shard.refresh(Date.now()).catch((err) => console.error(`pool shard summary not pushed: ${String(err)}`)));
    if (this.sockets.count() > 0) {
      next = Math.min(next ?? Number.POSITIVE_INFINITY, this.staleCheckAt());
      this.staleArmed = true;
    }
    // An earlier alarm set meanwhile (a slash recorded while this one awaited the chain) stays.
    if (next !== null) await this.armAlarm(next);
  }

  /** Transactions from the router key one at a time (nonces), whoever sends them: slash batches, faucet grants; across shards under the directory's lease. */
  private withRouterKey<T>(fn: () => Promise<T>): Promise<T> {
    const send = () => this.shard.leased(fn);
    const run = this.routerKeyQueue.then(send, send);
    this.routerKeyQueue = run.catch(() => {});
    return run;
  }

  private routerKeyQueue: Promise<unknown> = Promise.resolve();

  /** Dev faucet (ROUTER_ENV=development with a chain; the route checks): durable-objects/pool-stake.ts grantFaucet. */
  async faucet(address: string): Promise<FaucetOutcome> {
    const cfg = backgroundChain(this.env);
    if (!cfg) return { ok: false, error: { code: "not_found", message: "no chain is configured" } };
    return grantFaucet(this.sql, this.env, cfg, address, (send) => this.withRouterKey(send));
  }

  /**
   * Closes the sockets heard from (ping, frame) three intervals ago or longer; no storage read per socket. At
   * most a tenth of them per pass (STALE_CLOSE_SHARE), the stalest first: many miners silent at once is far
   * more often this object's own lag (a reconnect storm on a starved thread) than that many half-open sockets,
   * and closing them all made them reconnect into the same storm. A true mass failure still clears in a few passes.
   */
  private staleCheck(late: number): void {
    const cutoff = Date.now() - 3 * this.heartbeatMs() - late;
    const open: { ws: WebSocket; address: string }[] = [];
    const stale: { ws: WebSocket; address: string; seen: number }[] = [];
    const all = this.sockets.all();
    for (const { ws, claims } of all) {
      const seen = this.live.lastSeen(ws, claims.address);
      if (seen < cutoff) stale.push({ ws, address: claims.address, seen });
      else open.push({ ws, address: claims.address });
    }
    const cap = staleCloseCap(all.length);
    stale.sort((a, b) => a.seen - b.seen);
    for (const s of stale.slice(0, cap)) {
      s.ws.close(4008, "heartbeat missed");
      this.leave(s.ws);
    }
    open.push(...stale.slice(cap));
    if (stale.length > cap) console.warn(`pool stale check: ${stale.length} of ${all.length} sockets silent; closed the ${cap} stalest`);
    this.live.sweep(open);
  }

  // ── assignment ───────────────────────────────────────────────────────────────────────────────────────

  private leave(ws: WebSocket): void {
    const claims = this.sockets.claims(ws);
    if (!claims || this.sockets.supersededBy(ws, claims.address)) return;
    this.live.forget(claims.address);
    this.sql.exec(`UPDATE miners SET inflight = 0 WHERE address = ?`, claims.address);
    this.online().delete(claims.address);
    this.stats.changed(Date.now());
    this.figures.changed(Date.now());
    this.rebalanceSoon({ exclude: claims.address });
  }

  /** Queues a miner's arrival (`notify`: it is told its list) or departure for the next batched rebalance. */
  private rebalanceSoon(change: { exclude?: string; notify?: string }): void {
    const { exclude, notify } = this.pending;
    if (change.notify) {
      notify.add(change.notify);
      exclude.delete(change.notify);
    }
    if (change.exclude) {
      exclude.add(change.exclude);
      notify.delete(change.exclude);
    }
    this.pending.timer ??= setTimeout(() => this.rebalance(), REBALANCE_MS);
  }

  /**
   * Recomputes which online, unbenched miners serve which sessions (pool-assignment.ts: shared sessions first,
   * then each owner's in turn, at most capacity × MINER_SESSIONS_PER_SLOT per miner). Miners whose set changed
   * (and `notify`) are told their full list; changed sessions' miner counts are written.
   */
  private rebalance(change: { exclude?: string; notify?: string } = {}): void {
    const { exclude, notify } = this.pending;
    if (change.notify) notify.add(change.notify);
    if (change.exclude) exclude.add(change.exclude);
    clearTimeout(this.pending.timer);
    this.pending.timer = undefined;
    const opts = { exclude: new Set(exclude), notify: new Set(notify) };
    exclude.clear();
    notify.clear();
    const benched = this.benched();
    const online = this.onlineMiners().filter((m) => !opts.exclude.has(m.address) && !benched.has(m.address));
    const score = reputationScores(this.sql);
    applyRebalance(this.sql, this.sockets, { online, notify: opts.notify, score, perSlot: sessionsPerSlot(this.env) });
    this.shard.pushSoon();
  }

  private policy(): Policy {
    return poolPolicy(this.env);
  }

  /** Addresses of miners that may not be given sessions. */
  private benched(): Set<string> {
    return benchedMiners(this.sql, this.policy());
  }

  private onlineMiners(): (MinerClaims & { ws: WebSocket })[] {
    return this.sockets.connected().map((m) => ({ ...m.claims, ws: m.ws }));
  }

  private presence(): Presence {
    return { online: this.online(), policy: this.policy() };
  }

  private online(): Set<string> {
    this.connectedSet ??= new Set(this.onlineMiners().map((m) => m.address));
    return this.connectedSet;
  }

  private staleCheckAt(): number {
    return phasedAt(Date.now(), 2 * this.heartbeatMs(), this.shard.phase());
  }

  private heartbeatMs(): number {
    return Number(this.env.HEARTBEAT_MS) || 5000;
  }

  /** Arms the stale check once (not one storage read per connect): the alarm re-arms itself while miners are connected. */
  private async armStaleCheck(): Promise<void> {
    if (this.staleArmed) return;
    this.staleArmed = true;
    await this.armAlarm(this.staleCheckAt());
  }

  /** The alarm at `at` at the latest (an earlier one stays). */
  private async armAlarm(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
    this.alarmDue = Math.min(current ?? at, at);
  }
}
