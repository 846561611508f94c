import { ERROR_STATUS, type Failure } from "../../shared/errors.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { contextFor, type SessionJoin } from "../miner-credentials.ts";
import { upgradeClaims } from "../miner-sockets.ts";
import { mayServe } from "./admission.ts";
import { holdsWork } from "./holdings.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { QueueParts } from "./parts.ts";
import type { Stragglers } from "./stragglers.ts";
import { assignMessage } from "./task.ts";

// Who may open a session channel. The router verified the token's signature and expiry; here the NodePool, the
// registry, says whether the token is still current (a newer registration or a revoke retires it) and whether
// it assigned the miner to this session. A miner joins only where the pool assigned it (or a dedicated session
// lists it), or to finish work it already holds here; and never beyond max_miners. The pool writes an assignment
// before it tells the miner, so a miner told about a session always finds itself allowed; a miner the pool has
// moved elsewhere but that is still connected gives way to it when the session is full.

/** Closed on a miner that no longer belongs here when an assigned miner needs its place. */
const CLOSE_GIVE_WAY = 4003;
/** Closed on a miner whose token was revoked. */
const CLOSE_REVOKED = 4401;
/** Revoke floors remembered (memory only: after an eviction the pool's own epoch check is the word). */
const FLOORS_MAX = 10_000;

export type JoinDecision = { refuse: Failure } | { evict: string[] };

/** Pure rule of a join: refuse, or accept after closing the listed sockets (leftovers the pool no longer assigns). */
export function joinDecision(
  config: SessionConfig,
  address: string,
  pool: SessionJoin,
  connected: readonly { address: string; holdsWork: boolean }[],
  holdsWork: boolean,
): JoinDecision {
  if (!pool.current) {
    return { refuse: { code: "unauthorized", message: "miner token revoked (the miner registered again or was revoked): register again" } };
  }
  if (holdsWork) return { evict: [] }; // back for tasks it holds here
  const members = new Set([...pool.members, ...(config.mode === "dedicated" ? config.dedicated_miners : [])]);
  if (!members.has(address)) {
    return { refuse: { code: "forbidden", message: `the pool has not assigned this miner to session ${config.id}` } };
  }
  const others = connected.filter((m) => m.address !== address);
  const excess = others.length + 1 - config.max_miners;
  if (excess <= 0) return { evict: [] };
  const leftovers = others.filter((m) => !members.has(m.address) && !m.holdsWork).map((m) => m.address);
  if (leftovers.length < excess) {
    return {
      refuse: {
        code: "forbidden",
        message: `session ${config.id} is full: max_miners is ${config.max_miners}`,
        details: { max_miners: config.max_miners },
      },
    };
  }
  return { evict: leftovers.slice(0, excess) };
}

const refusal = (error: Failure) => Response.json({ error }, { status: ERROR_STATUS[error.code] });

/** The pool as a join asks it (durable-objects/node-pool.ts `sessionJoin`). */
export interface JoinRegistry {
  /** `others`: connected miners whose membership the join may need (named only when the session is full). */
  sessionJoin(sessionId: string, address: string, epoch: number, others?: readonly string[]): Promise<SessionJoin>;
}

export class MinerChannels {
  private readonly parts: QueueParts;
  private readonly tasks: OpenTasks;
  private readonly stragglers: Stragglers;
  private readonly config: () => SessionConfig | null;
  private readonly pool: () => JoinRegistry;
  /** Per miner, the lowest token epoch a revoke left valid here. */
  private readonly floors = new Map<string, number>();

  constructor(parts: QueueParts, open: OpenTasks, stragglers: Stragglers, config: () => SessionConfig | null, pool: () => JoinRegistry) {
    this.parts = parts;
    this.tasks = open;
    this.stragglers = stragglers;
    this.config = config;
    this.pool = pool;
  }

  /** A miner's session channel: 101 with the welcome and the assigns it holds, or the refusal. */
  async open(request: Request): Promise<Response> {
    const claims = upgradeClaims(request);
    if (!claims) return new Response("expected a miner WebSocket", { status: 426 });
    const config = this.config();
    if (!config) return refusal({ code: "session_not_found", message: "unknown session" });
    if (!mayServe(config, claims)) return refusal({ code: "forbidden", message: "this miner may not serve this session" });
    const { sockets } = this.parts;
    // Who else is connected matters only when the session is full (whom to close for the newcomer): only then does
    // the pool ask those miners' shards (pool-shards.ts sessionJoin).
    const before = sockets
      .connected()
      .map((m) => m.claims.address)
      .filter((a) => a !== claims.address);
    const asked = before.length + 1 > config.max_miners ? before : [];
    const answer = await this.pool().sessionJoin(config.id, claims.address, claims.epoch, asked);
    // Decided after the await, against the sockets open now: two joins racing for the last place cannot both win,
    // and a revoke that arrived meanwhile (the pool answered before it) still refuses the token. A connected miner
    // the pool was not asked about (the session filled up during the await) counts as a member: never closed on a guess.
    const holds = (address: string) => holdsWork(this.tasks, this.stragglers, address);
    const connected = sockets.connected().map((m) => ({ address: m.claims.address, holdsWork: holds(m.claims.address) }));
    const wasAsked = new Set(asked);
    const unasked = connected.map((m) => m.address).filter((a) => a !== claims.address && !wasAsked.has(a));
    const current = answer.current && claims.epoch >= (this.floors.get(claims.address) ?? 0);
    const pool = { ...answer, current, members: [...answer.members, ...unasked] };
    const decision = joinDecision(config, claims.address, pool, connected, holds(claims.address));
    if ("refuse" in decision) return refusal(decision.refuse);
    for (const address of decision.evict) sockets.socketFor(address)?.close(CLOSE_GIVE_WAY, "the pool assigns this place to another miner");
    // Only the session model's context rides on the socket (attachments are small).
    const context = contextFor(pool.contexts, config.model);
    const { client, server } = sockets.accept({ ...claims, ...(context ? { contexts: [context] } : {}) });
    const block = this.parts.block(Date.now());
    sockets.send(server, {
      type: "welcome",
      session_id: config.id,
      miner: claims.address,
      model: config.model,
      block,
      protocol: PROTOCOL_VERSION,
    });
    // Re-send what this miner holds but may have missed while it was away; it dedups by task id.
    for (const task of this.tasks.values()) {
      const r = task.replicas.get(claims.address);
      if (r && (r.state === "assigned" || r.state === "acked")) sockets.send(server, assignMessage(task, r, block));
    }
    return new Response(null, { status: 101, webSocket: client });
  }

  /** The pool revoked the miner's tokens below `epoch`: close its channel here, and refuse such a token from now on. */
  revoke(address: string, epoch: number): void {
    const miner = address.toLowerCase();
    const floor = Math.max(this.floors.get(miner) ?? 0, epoch);
    this.floors.delete(miner); // re-inserted last: the oldest entries go first when the map is full
    if (this.floors.size >= FLOORS_MAX) this.floors.delete(this.floors.keys().next().value!);
    this.floors.set(miner, floor);
    for (const { ws, claims } of this.parts.sockets.all()) {
      if (claims.address === miner && claims.epoch < epoch) ws.close(CLOSE_REVOKED, "token revoked");
    }
  }
}
