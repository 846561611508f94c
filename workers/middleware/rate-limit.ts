import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { apiKeyOwner, bearerToken } from "../lib/credentials.ts";
import { parseManagedKey } from "../lib/keys.ts";
import { verifyMinerToken } from "../lib/miner-token.ts";
import { madeByCallRest } from "../lib/rest-call.ts";

// Abuse limits, with the Workers rate-limiting binding (`[[ratelimits]]` in wrangler.toml): per API key, per
// miner (the address of a validly signed miner token, however many tokens it holds), per client IP on the
// unauthenticated miner routes (challenge, register), and per client IP on failed authentication (a bearer that
// is neither is not counted here: its route answers 401, which counts). The binding counts at the edge without
// a round trip in production and miniflare implements it under `wrangler dev`; its limits live in wrangler.toml
// (periods of 10 or 60 s), not in vars. Over a limit: 429 `rate_limited` with `Retry-After`. The client IP is
// `CF-Connecting-IP`, which Cloudflare sets on every request; an IPv6 client counts by its /64 (one subscriber's
// allocation, from which it could use a fresh address per request). A limiter that errors lets the request
// through (fail open: an outage of the limiter must not take the router down) and logs a warning.

/** The period of every `[[ratelimits]]` entry in wrangler.toml, seconds: the longest a client waits. */
export const RATE_LIMIT_PERIOD_S = 10;

/** Routes anyone may call without a credential that still cost the router work (a nonce, a signature check). */
const PER_IP_ROUTES = new Set(["/api/v1/miners/challenge", "/api/v1/miners/register"]);

const WHAT = {
  api_key: "requests with this API key",
  miner_token: "requests of this miner",
  ip: "unauthenticated requests from this IP address",
  auth_failures: "failed authentications from this IP address",
} as const;
type Scope = keyof typeof WHAT;

export function clientIp(c: Context<AppEnv>): string {
  return (c.req.header("CF-Connecting-IP") ?? "unknown").trim().slice(0, 64);
}

/** The 16-bit groups of an IPv6 address (`::` expanded, a trailing IPv4 part converted), else null. */
function ipv6Groups(ip: string): number[] | null {
  const v4 = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  let text = ip;
  if (v4) {
    const b = v4.slice(2).map(Number);
    if (b.some((x) => x > 255)) return null;
    text = `${v4[1]}${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const part = (h: string) => (h === "" ? [] : h.split(":"));
  const [head, tail] = [part(halves[0]), halves.length === 2 ? part(halves[1]) : []];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
  const groups = [...head, ...Array<string>(Math.max(0, fill)).fill("0"), ...tail];
  return groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g)) ? groups.map((g) => Number.parseInt(g, 16)) : null;
}

/**
 * What a client IP counts as: an IPv6 address by its /64 (written canonically), an IPv4 address — or an
 * IPv4-mapped IPv6 one — by itself; anything else as it came.
 */
export function ipBucket(ip: string): string {
  const bare = ip.split("%")[0]; // a zone id names an interface, not another host
  const g = bare.includes(":") ? ipv6Groups(bare) : null;
  if (!g) return ip;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.${g[7] & 255}`;
  return `${g
    .slice(0, 4)
    .map((x) => x.toString(16))
    .join(":")}::/64`;
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
  // An MCP tool call or A2A skill's inner REST request: its outer request, same credentials, was counted.
  if (madeByCallRest(c.req.raw)) return next();
  if (c.req.method === "POST" && PER_IP_ROUTES.has(c.req.path)) {
    if (!(await counted(c.env.RATE_LIMIT_IP, `ip:${ipBucket(clientIp(c))}`))) throw limited(c, "ip");
  } else {
    const token = bearerToken(c.req.header("Authorization"));
    // A managed key (lib/keys.ts) is recognised by its format, without a lookup: its own per-minute limit, if
    // it has one, is the registry's (middleware/key-gate.ts); this is the router-wide abuse limit.
    if (token !== null && (apiKeyOwner(c.env, token) !== undefined || parseManagedKey(token) !== null)) {
      if (!(await counted(c.env.RATE_LIMIT_KEY, `api_key:${await credentialId(token)}`))) throw limited(c, "api_key");
    } else if (token !== null) {
      // Per miner, not per token string: one canonical spelling per token (lib/miner-token.ts), and a miner's
      // tokens share one counter. A bearer that verifies as neither is left to its route's 401.
      const claims = await verifyMinerToken(c.env.MINER_TOKEN_SECRET, token);
      if (claims && !(await counted(c.env.RATE_LIMIT_MINER, `miner:${claims.address}`))) throw limited(c, "miner_token");
    }
  }
  await next();
});

/**
 * For an authentication failure about to be answered: counts it against the client's IP and returns the 429
 * to answer instead once that IP failed too often, else null.
 */
export async function authFailureLimit(c: Context<AppEnv>): Promise<ApiError | null> {
  return (await counted(c.env.RATE_LIMIT_AUTH_FAILURES, `auth:${ipBucket(clientIp(c))}`)) ? null : limited(c, "auth_failures");
}
