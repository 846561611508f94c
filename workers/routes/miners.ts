import { Hono } from "hono";
import { routerIdentity } from "../../durable-objects/deployment.ts";
import { minerShard } from "../../durable-objects/pool-shards.ts";
import { MinerChallengeRequest, MinerRegisterRequest } from "../../shared/api.ts";
import type { ErrorCode, JsonValue } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { bearerToken, minerCaller } from "../lib/credentials.ts";
import { issueMinerToken, tokenTtlSeconds, verifyMinerToken } from "../lib/miner-token.ts";
import { jsonBody, params } from "../lib/request-validation.ts";
import { SessionParam } from "../lib/schemas.ts";
import { catalogQueue } from "../lib/tenancy.ts";

// Miner-facing routes. Miners prove their wallet with a signed challenge instead of an API key, then use the
// token they get for their WebSockets: one pool channel, one channel per session they serve.

export const miners = new Hono<AppEnv>();

// The challenge names this deployment and the origin it was asked at; register rebuilds the message from its own
// request's origin, so a signature a miner made for another router (or another origin) does not verify here.
miners.post("/miners/challenge", jsonBody(MinerChallengeRequest), async (c) => {
  const router = routerIdentity(c.env, new URL(c.req.url).origin);
  const { address } = c.req.valid("json");
  return c.json(await minerShard(c.env, address).challenge(address, router));
});

miners.post("/miners/register", jsonBody(MinerRegisterRequest), async (c) => {
  const router = routerIdentity(c.env, new URL(c.req.url).origin);
  const body = c.req.valid("json");
  const outcome = await minerShard(c.env, body.address).register(body, router);
  if (!outcome.ok) throw ApiError.from(outcome.error);
  const { token, expires_at } = await issueMinerToken(c.env.MINER_TOKEN_SECRET, outcome.claims, tokenTtlSeconds(c.env));
  const heartbeat_ms = Number(c.env.HEARTBEAT_MS) || 5000;
  return c.json({ address: outcome.claims.address, token, expires_at, heartbeat_ms, router });
});

/** Checks the upgrade and the miner token; the request, with verified claims, is for a Durable Object. */
async function minerUpgrade(req: Request, secret: string): Promise<{ request: Request; address: string }> {
  if (req.headers.get("Upgrade") !== "websocket") throw new ApiError("invalid_request", "expected a WebSocket upgrade");
  const token = bearerToken(req.headers.get("Authorization"));
  const claims = token ? await verifyMinerToken(secret, token) : null;
  if (!claims) throw new ApiError("unauthorized", "missing, invalid or expired miner token");
  const headers = new Headers(req.headers);
  headers.set("X-Miner-Claims", JSON.stringify(claims));
  return { request: new Request(req, { headers }), address: claims.address };
}

/** A Durable Object's answer to a miner's upgrade: the socket, or its refusal as the router's error body. */
async function upgraded(res: Response): Promise<Response> {
  if (res.status === 101) return res;
  const body = (await res.json().catch(() => null)) as { error?: { code: ErrorCode; message: string; details?: JsonValue } } | null;
  throw new ApiError(body?.error?.code ?? "invalid_request", body?.error?.message ?? "connection refused", body?.error?.details);
}

miners.get("/miners/connect", async (c) => {
  // The miner's own shard: it reconnects there after any restart (same address, same shard).
  const { request, address } = await minerUpgrade(c.req.raw, c.env.MINER_TOKEN_SECRET);
  return upgraded(await minerShard(c.env, address).fetch(request));
});

/**
 * POST /miners/revoke (miner token): revokes every token of the calling miner and closes its channels, e.g. when
 * one leaked: the pool's, and every session's where the miner is assigned or joined (to finish work it held).
 * Each session also refuses, from now on, a join with a token below the new epoch — one racing this revoke
 * included. The agent registers again by itself (its wallet key is what a token cannot replace).
 */
miners.post("/miners/revoke", async (c) => {
  const address = await minerCaller(c);
  const { sessions, epoch } = await minerShard(c.env, address).revoke(address);
  await Promise.all(sessions.map(async (id) => (await catalogQueue(c.env, id))?.revokeMiner(address, epoch)));
  return c.json({ address, revoked: true, sessions_closed: sessions.length });
});

miners.get("/sessions/:sessionId/connect", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  const { request: upgrade } = await minerUpgrade(c.req.raw, c.env.MINER_TOKEN_SECRET);
  // Only sessions in the catalog: a made-up id creates no Durable Object.
  const queue = await catalogQueue(c.env, sessionId);
  if (!queue) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return upgraded(await queue.fetch(upgrade));
});
