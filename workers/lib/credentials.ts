import type { Context } from "hono";
import { minerShard } from "../../durable-objects/pool-shards.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "./api-error.ts";
import { resolveClientKey } from "./keys.ts";
import { verifyMinerToken } from "./miner-token.ts";

// The credentials a request carries, all in `Authorization: Bearer <token>`: a client API key (static `API_KEYS`
// or a managed key, lib/keys.ts), or
// a miner token from registration (lib/miner-token.ts). API-key routes get `owner` from the apiKeyAuth
// middleware; routes that both clients and miners call (payload keys, off-chain objects) resolve the caller
// here, where they decide what that caller may do.

/** The token of an `Authorization: Bearer <token>` header, else null. */
export function bearerToken(header: string | null | undefined): string | null {
  return /^Bearer\s+(\S+)$/i.exec(header ?? "")?.[1] ?? null;
}

/** The owner name of a static API key (`API_KEYS`), else undefined (lib/keys.ts). */
export { apiKeyOwner } from "./keys.ts";

export type Caller = { kind: "client"; owner: string } | { kind: "miner"; address: string };

/** Who calls a route open to both sides: the API key's owner, else the miner token's address. */
export async function caller(c: Context<AppEnv>): Promise<Caller> {
  const token = bearerToken(c.req.header("Authorization"));
  if (!token) throw new ApiError("unauthorized", "missing `Authorization: Bearer <api key or miner token>` header");
  const key = await resolveClientKey(c.env, token);
  if (typeof key === "string") throw new ApiError("unauthorized", key);
  if (key) return { kind: "client", owner: key.owner };
  const claims = await verifyMinerToken(c.env.MINER_TOKEN_SECRET, token);
  if (!claims) throw new ApiError("unauthorized", "unknown API key or invalid/expired miner token");
  // The registry's word on revocation: a token older than the miner's latest registration is refused.
  if (!(await minerShard(c.env, claims.address).tokenCurrent(claims.address, claims.epoch))) {
    throw new ApiError("unauthorized", "miner token revoked (the miner registered again or was revoked): register again");
  }
  return { kind: "miner", address: claims.address.toLowerCase() };
}

/** The calling miner's address; a client API key is refused. */
export async function minerCaller(c: Context<AppEnv>): Promise<string> {
  const who = await caller(c);
  if (who.kind !== "miner") throw new ApiError("forbidden", "this route is for miners (miner token)");
  return who.address;
}
