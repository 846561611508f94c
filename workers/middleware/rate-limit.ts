import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { apiKeyOwner, bearerToken } from "../lib/credentials.ts";

// Abuse limits, with the Workers rate-limiting binding (`[[ratelimits]]` in wrangler.toml): per API key, per
// miner token (any other bearer), per client IP on the unauthenticated miner routes (challenge, register), and
// per client IP on failed authentication. The binding counts at the edge without a round trip in production
// and miniflare implements it under `wrangler dev`; its limits live in wrangler.toml (periods of 10 or 60 s),
// not in vars. Over a limit: 429 `rate_limited` with `Retry-After`. The client IP is `CF-Connecting-IP`,
// which Cloudflare sets on every request.

/** The period of every `[[ratelimits]]` entry in wrangler.toml, seconds: the longest a client waits. */
export const RATE_LIMIT_PERIOD_S = 10;

/** Routes anyone may call without a credential that still cost the router work (a nonce, a signature check). */
const PER_IP_ROUTES = new Set(["/api/v1/miners/challenge", "/api/v1/miners/register"]);

const WHAT = {
  api_key: "requests with this API key",
  miner_token: "requests with this miner token",
  ip: "unauthenticated requests from this IP address",
  auth_failures: "failed authentications from this IP address",
} as const;
type Scope = keyof typeof WHAT;

export function clientIp(c: Context<AppEnv>): string {
  return (c.req.header("CF-Connecting-IP") ?? "unknown").trim().slice(0, 64);
}

/** A credential's counter name: a digest, so the limiter never holds a secret. */
async function credentialId(token: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
  return Array.from(digest.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Counts one request against `key`; false when over the limit. A limiter that fails lets the request through. */
async function counted(limiter: RateLimit, key: string): Promise<boolean> {
  try {
    return (await limiter.limit({ key })).success;
  } catch (err) {
    console.warn(`rate limiter unavailable, request let through: ${String(err)}`);
    return true;
  }
}

function limited(c: Context<AppEnv>, scope: Scope): ApiError {
  c.header("Retry-After", String(RATE_LIMIT_PERIOD_S));
  return new ApiError("rate_limited", `too many ${WHAT[scope]}: retry after ${RATE_LIMIT_PERIOD_S} s`, {
    scope,
    retry_after_s: RATE_LIMIT_PERIOD_S,
  });
}

/** Mounted once, before the routes: the per-IP, per-key and per-miner-token limits. */
export const rateLimit = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.method === "POST" && PER_IP_ROUTES.has(c.req.path)) {
    if (!(await counted(c.env.RATE_LIMIT_IP, `ip:${clientIp(c)}`))) throw limited(c, "ip");
  } else {
    const token = bearerToken(c.req.header("Authorization"));
    if (token !== null) {
      const isKey = apiKeyOwner(c.env, token) !== undefined;
      const [limiter, scope]: [RateLimit, Scope] = isKey ? [c.env.RATE_LIMIT_KEY, "api_key"] : [c.env.RATE_LIMIT_MINER, "miner_token"];
      if (!(await counted(limiter, `${scope}:${await credentialId(token)}`))) throw limited(c, scope);
    }
  }
  await next();
});

/**
 * For an authentication failure about to be answered: counts it against the client's IP and returns the 429
 * to answer instead once that IP failed too often, else null.
 */
export async function authFailureLimit(c: Context<AppEnv>): Promise<ApiError | null> {
  return (await counted(c.env.RATE_LIMIT_AUTH_FAILURES, `auth:${clientIp(c)}`)) ? null : limited(c, "auth_failures");
}
