import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { verifyMinerToken } from "../lib/miner-token.ts";
import { keyTable } from "./auth.ts";

// Routes that both clients and miners call (payload keys, off-chain payload fetches) take either credential
// in the same `Authorization: Bearer` header: a client API key, or a miner token from registration.

export type Caller = { kind: "client"; owner: string } | { kind: "miner"; address: string };

export async function caller(c: Context<AppEnv>): Promise<Caller> {
  const match = /^Bearer\s+(\S+)$/i.exec(c.req.header("Authorization") ?? "");
  if (!match) throw new ApiError("unauthorized", "missing `Authorization: Bearer <api key or miner token>` header");
  const owner = keyTable(c.env.API_KEYS).get(match[1]);
  if (owner) return { kind: "client", owner };
  const claims = await verifyMinerToken(c.env.MINER_TOKEN_SECRET, match[1]);
  if (claims) return { kind: "miner", address: claims.address.toLowerCase() };
  throw new ApiError("unauthorized", "unknown API key or invalid/expired miner token");
}

export async function minerCaller(c: Context<AppEnv>): Promise<string> {
  const who = await caller(c);
  if (who.kind !== "miner") throw new ApiError("forbidden", "this route is for miners (miner token)");
  return who.address;
}
