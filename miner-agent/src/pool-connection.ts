import {
  HEARTBEAT_FULL_EVERY,
  HEARTBEAT_LIMITS,
  POOL_PING,
  POOL_PONG,
  type PoolMinerMessage,
  PoolServerMessage,
  parseMessage,
} from "../../shared/protocol.ts";
import type { Backoff } from "./backoff.ts";
import type { Logger } from "./log.ts";
import type { Stats } from "./stats.ts";
import { ReconnectingSocket, type TokenSource } from "./ws-channel.ts";

// The pool channel (miner ↔ NodePool): the router tells us which sessions to serve; we send heartbeats with
// our load. Heartbeats run only while connected, at the interval the router asks for. A router that answers
// liveness pings itself (`registered.ping`) gets the ping each interval and the figures only when they change
// or every HEARTBEAT_FULL_EVERY-th interval, so an idle miner costs the pool nothing.

export interface SessionRef {
  session_id: string;
  model: string;
}

export interface PoolConnectionOptions {
  url: string;
  address: string;
  tokens: TokenSource;
  log: Logger;
  stats: Stats;
  /** Tasks accepted and not finished, for the heartbeat. */
  inflight: () => number;
  heartbeatMs: number;
  onRegistered: (info: { block: number; heartbeat_ms: number; reconnect: boolean }) => void;
  onSessions: (sessions: SessionRef[]) => void;
  /** The router said our token is bad over an open socket. */
  onUnauthorized?: () => void;
  backoff?: Backoff;
}

const MIN_HEARTBEAT_MS = 100;
const MAX_HEARTBEAT_MS = 5 * 60_000;

export class PoolConnection {
  readonly #opts: PoolConnectionOptions;
  readonly #socket: ReconnectingSocket;
  #heartbeatMs: number;
  #timer: NodeJS.Timeout | undefined;
  #everRegistered = false;
  /** The router answers POOL_PING without waking its pool (see above). */
  #ping = false;
  /** The figures last sent (coarsened), and intervals since. */
  #lastFigures = "";
  #sinceFull = 0;

  constructor(opts: PoolConnectionOptions) {
    this.#opts = opts;
    this.#heartbeatMs = clampHeartbeat(opts.heartbeatMs);
    this.#socket = new ReconnectingSocket({
      name: "pool",
      url: opts.url,
      tokens: opts.tokens,
      log: opts.log,
      backoff: opts.backoff,
      handlers: {
        onMessage: (text) => this.#onMessage(text),
        onClose: () => this.#stopHeartbeat(),
      },
    });
  }

  get connected(): boolean {
    return this.#socket.isOpen;
  }

  start(): void {
    this.#socket.start();
  }

  /** Sends one heartbeat now (also used right after `registered`, so the pool has our numbers at once). */
  heartbeat(): boolean {
    const msg = this.#figures();
    this.#lastFigures = coarse(msg);
    this.#sinceFull = 0;
    return this.#socket.send(JSON.stringify(msg));
  }

  /** Each interval: the ping while the figures hold still, else (or every HEARTBEAT_FULL_EVERY-th) the heartbeat. */
  #beat(): boolean {
    if (!this.#ping || ++this.#sinceFull >= HEARTBEAT_FULL_EVERY || coarse(this.#figures()) !== this.#lastFigures) return this.heartbeat();
    return this.#socket.send(POOL_PING);
  }

  #figures(): PoolMinerMessage {
    const { stats, inflight } = this.#opts;
    // Kept within what the router accepts (shared/protocol.ts), so an odd reading never costs the heartbeat.
    const cap = (n: number, max: number) => Math.min(max, Math.max(0, n));
    const speed = stats.tokensPerSecond();
    const msg: PoolMinerMessage = {
      type: "heartbeat",
      inflight: cap(inflight(), HEARTBEAT_LIMITS.inflight),
      cpu_usage: cap(stats.cpuPercent(), HEARTBEAT_LIMITS.cpu_usage),
      memory_mb: cap(stats.memoryMb(), HEARTBEAT_LIMITS.memory_mb),
      tokens_per_s: speed === undefined ? undefined : cap(speed, HEARTBEAT_LIMITS.tokens_per_s),
    };
    return msg;
  }

  async close(): Promise<void> {
    this.#stopHeartbeat();
    await this.#socket.close(1000, "miner shutting down");
  }

  #onMessage(text: string): void {
    const { log } = this.#opts;
    if (text === POOL_PONG) return;
    const msg = parseMessage(PoolServerMessage, text);
    if (!msg) {
      log.warn(`pool: malformed message ignored: ${text.slice(0, 200)}`);
      return;
    }
    switch (msg.type) {
      case "registered": {
        if (msg.address.toLowerCase() !== this.#opts.address.toLowerCase()) {
          log.warn(`pool: registered as ${msg.address}, expected ${this.#opts.address}`);
        }
        this.#heartbeatMs = clampHeartbeat(msg.heartbeat_ms);
        this.#ping = msg.ping === true;
        this.#socket.markHealthy();
        const reconnect = this.#everRegistered;
        this.#everRegistered = true;
        this.#startHeartbeat();
        this.#opts.onRegistered({ block: msg.block, heartbeat_ms: this.#heartbeatMs, reconnect });
        return;
      }
      case "sessions":
        this.#opts.onSessions(msg.sessions);
        return;
      case "error":
        log.warn(`pool: router error ${msg.code}: ${msg.message}`);
        if (msg.code === "unauthorized") this.#opts.onUnauthorized?.();
        // Backpressure: an overloaded pool asks for a longer interval (until the next `registered`).
        if (msg.code === "overloaded" && msg.heartbeat_ms && msg.heartbeat_ms > this.#heartbeatMs) {
          this.#heartbeatMs = clampHeartbeat(msg.heartbeat_ms);
          this.#startHeartbeat();
        }
        return;
    }
  }

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    this.heartbeat();
    this.#timer = setInterval(() => this.#beat(), this.#heartbeatMs);
  }

  #stopHeartbeat(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** The figures as far as the pool cares: a change below these steps waits for the next full heartbeat. */
function coarse(m: PoolMinerMessage): string {
  return [m.inflight, Math.round(m.cpu_usage / 10), Math.round(m.memory_mb / 256), Math.round(m.tokens_per_s ?? -1)].join();
}

function clampHeartbeat(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) return 10_000;
  return Math.min(MAX_HEARTBEAT_MS, Math.max(MIN_HEARTBEAT_MS, ms));
}
