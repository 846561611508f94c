import { Hono } from "hono";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import { MinerChallengeRequest, MinerRegisterRequest } from "../../shared/api.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { bearerToken } from "../lib/credentials.ts";
import { issueMinerToken, verifyMinerToken } from "../lib/miner-token.ts";
import { jsonBody, params } from "../lib/request-validation.ts";
import { SessionParam } from "../lib/schemas.ts";

// Miner-facing routes. Miners prove their wallet with a signed challenge instead of an API key, then use the
// token they get for their WebSockets: one pool channel, one channel per session they serve.

export const miners = new Hono<AppEnv>();

miners.post("/miners/challenge", jsonBody(MinerChallengeRequest), async (c) => {
  return c.json(await nodePool(c.env).challenge(c.req.valid("json").address));
});

miners.post("/miners/register", jsonBody(MinerRegisterRequest), async (c) => {
  const outcome = await nodePool(c.env).register(c.req.valid("json"));
  if (!outcome.ok) throw ApiError.from(outcome.error);
  const { token, expires_at } = await issueMinerToken(c.env.MINER_TOKEN_SECRET, outcome.claims);
  return c.json({ address: outcome.claims.address, token, expires_at, heartbeat_ms: Number(c.env.HEARTBEAT_MS) || 5000 });
});

/** Checks the upgrade and the miner token, then hands the request, with verified claims, to a Durable Object. */
async function minerUpgrade(req: Request, secret: string): Promise<Request> {
  if (req.headers.get("Upgrade") !== "websocket") throw new ApiError("invalid_request", "expected a WebSocket upgrade");
  const token = bearerToken(req.headers.get("Authorization"));
  const claims = token ? await verifyMinerToken(secret, token) : null;
  if (!claims) throw new ApiError("unauthorized", "missing, invalid or expired miner token");
  const headers = new Headers(req.headers);
  headers.set("X-Miner-Claims", JSON.stringify(claims));
  return new Request(req, { headers });
}

miners.get("/miners/connect", async (c) => {
  return nodePool(c.env).fetch(await minerUpgrade(c.req.raw, c.env.MINER_TOKEN_SECRET));
});

miners.get("/sessions/:sessionId/connect", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  const res = await sessionQueue(c.env, sessionId).fetch(await minerUpgrade(c.req.raw, c.env.MINER_TOKEN_SECRET));
  if (res.status === 101) return res;
  const body = (await res.json().catch(() => null)) as { error?: { code: "session_not_found" | "forbidden"; message: string } } | null;
  throw new ApiError(body?.error?.code ?? "invalid_request", body?.error?.message ?? "connection refused");
});
