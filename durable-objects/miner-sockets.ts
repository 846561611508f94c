import type { ModelContext } from "../shared/api.ts";

// Miners' WebSockets on a Durable Object, through the hibernation API: one manager for the SessionQueue and the
// NodePool alike (in the spirit of partyserver's connection manager). A socket is tagged with its miner's
// address (so it is found by miner after a wake-up) and carries the miner's verified claims as its attachment.

/** Verified miner identity, set by the router from the miner's token and kept across hibernation. */
export interface MinerClaims {
  address: string;
  capacity: number;
  models: string[];
  device: string;
  /** The token generation: the NodePool refuses a token whose epoch is not the miner's current one (revoked). */
  epoch: number;
  /** Decode speed declared at registration, tokens/s per task (absent: none; session-queue/fair-deadlines.ts). */
  tokens_per_s?: number;
  /** The models' contexts as the miner declared them (from the registry, added when a session accepts the socket). */
  contexts?: ModelContext[];
}

export interface MinerSocket {
  ws: WebSocket;
  claims: MinerClaims;
}

/** Header on which the router hands a Durable Object the claims it verified from the miner's token. */
export const CLAIMS_HEADER = "X-Miner-Claims";

/** The verified claims on a miner's WebSocket upgrade, or null when the request is not one. */
export function upgradeClaims(request: Request): MinerClaims | null {
  if (request.headers.get("Upgrade") !== "websocket") return null;
  return JSON.parse(request.headers.get(CLAIMS_HEADER) ?? "null") as MinerClaims | null;
}

export class MinerSockets<Out> {
  /** Attachments are structured-clone copies: read each socket's once, not on every message. */
  private readonly cache = new WeakMap<WebSocket, MinerClaims>();
  private readonly ctx: DurableObjectState;

  constructor(ctx: DurableObjectState) {
    this.ctx = ctx;
  }

  /** Accepts a miner's socket (one per miner: a reconnect replaces a half-open predecessor); returns the client end. */
  accept(claims: MinerClaims): { client: WebSocket; server: WebSocket } {
    for (const old of this.ctx.getWebSockets(claims.address)) old.close(4001, "replaced by a newer connection");
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server, [claims.address]);
    server.serializeAttachment(claims);
    this.cache.set(server, claims);
    return { client, server };
  }

  claims(ws: WebSocket): MinerClaims | null {
    let claims = this.cache.get(ws);
    if (!claims) {
      claims = (ws.deserializeAttachment() as MinerClaims | null) ?? undefined;
      if (claims) this.cache.set(ws, claims);
    }
    return claims ?? null;
  }

  /** Every socket with claims, open or not (e.g. to close stale ones). */
  all(): MinerSocket[] {
    const out: MinerSocket[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      const claims = this.claims(ws);
      if (claims) out.push({ ws, claims });
    }
    return out;
  }

  /** Open sockets with their miners. */
  connected(): MinerSocket[] {
    return this.all().filter((s) => s.ws.readyState === WebSocket.OPEN);
  }

  /** The miner's open socket, if any. */
  socketFor(address: string): WebSocket | undefined {
    return this.ctx.getWebSockets(address).find((ws) => ws.readyState === WebSocket.OPEN);
  }

  /** Whether a newer open socket of the same miner took over from `ws` (so its closing does not mean the miner left). */
  supersededBy(ws: WebSocket, address: string): boolean {
    return this.ctx.getWebSockets(address).some((s) => s !== ws && s.readyState === WebSocket.OPEN);
  }

  count(): number {
    return this.ctx.getWebSockets().length;
  }

  send(ws: WebSocket, msg: Out): void {
    try {
      ws.send(JSON.stringify(msg));
    } catch {
      // A socket closing under us is handled by webSocketClose.
    }
  }

  /** Sends to the miner's open socket; false when it has none. */
  sendTo(address: string, msg: Out): boolean {
    const ws = this.socketFor(address);
    if (ws) this.send(ws, msg);
    return !!ws;
  }
}
