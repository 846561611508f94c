import { z } from "zod";
import type { MinerClaims } from "../../durable-objects/miner-sockets.ts";

// Miner bearer tokens: the claims NodePool verified at registration, HMAC-signed with MINER_TOKEN_SECRET so the
// router checks a token without a round trip. Short-lived (MINER_TOKEN_TTL_S, default one hour; the agent renews
// at 80 % of it) and revocable: each carries the miner's token epoch, which the NodePool bumps on every
// registration and on an explicit revoke, and every connect (pool channel, session channels, miner HTTP calls)
// compares it with the registry. A socket already open stays open when its token expires or is revoked by a
// re-registration: the check is at connect (an explicit revoke closes the miner's sockets).

export const DEFAULT_TOKEN_TTL_S = 3600;
const MAX_TOKEN_TTL_S = 24 * 3600;

/** The token lifetime, seconds: MINER_TOKEN_TTL_S when it is a whole number from 1 to 86,400, else one hour. */
export function tokenTtlSeconds(env: Pick<Env, "MINER_TOKEN_TTL_S">): number {
  const n = Number(env.MINER_TOKEN_TTL_S);
  return Number.isInteger(n) && n >= 1 && n <= MAX_TOKEN_TTL_S ? n : DEFAULT_TOKEN_TTL_S;
}

/** Exactly `body.signature`, both base64url without padding; the signature is one SHA-256 HMAC (32 bytes). */
const TOKEN_FORMAT = /^([A-Za-z0-9_-]{16,4096})\.([A-Za-z0-9_-]{43})$/;

const Claims = z
  .object({
    address: z.string().regex(/^0x[0-9a-f]{40}$/),
    capacity: z.number().int().min(1),
    models: z.array(z.string()).min(1),
    device: z.string(),
    epoch: z.number().int().min(0),
    tokens_per_s: z.number().positive().optional(),
    exp: z.number(),
  })
  .strict();

const keys = new Map<string, Promise<CryptoKey>>();

function key(secret: string): Promise<CryptoKey> {
  let k = keys.get(secret);
  if (!k) {
    k = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    keys.set(secret, k);
  }
  return k;
}

const b64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
/**
 * The bytes of canonical base64url only. `atob` ignores a last character's unused low bits, so one token would
 * have several spellings — each its own rate-limiter key; the bytes must encode back to exactly `s`.
 */
function fromB64url(s: string): Uint8Array {
  const bytes = Uint8Array.from(atob(s.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));
  if (b64url(bytes) !== s) throw new Error("non-canonical base64url");
  return bytes;
}

/** Signs the registry's claims (contexts stay in the registry: the token carries identity, not capabilities). */
export async function issueMinerToken(
  secret: string,
  claims: MinerClaims,
  ttlSeconds = DEFAULT_TOKEN_TTL_S,
  now = Date.now(),
): Promise<{ token: string; expires_at: number }> {
  const expires_at = now + ttlSeconds * 1000;
  const { address, capacity, models, device, epoch, tokens_per_s } = claims;
  const payload = { address, capacity, models, device, epoch, ...(tokens_per_s === undefined ? {} : { tokens_per_s }), exp: expires_at };
  const body = b64url(new TextEncoder().encode(JSON.stringify(payload)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await key(secret), new TextEncoder().encode(body)));
  return { token: `${body}.${b64url(sig)}`, expires_at };
}

/** The claims of a well-formed, validly signed, unexpired token, else null (revocation is the registry's check). */
export async function verifyMinerToken(secret: string, token: string, now = Date.now()): Promise<MinerClaims | null> {
  const m = TOKEN_FORMAT.exec(token);
  if (!m) return null;
  const [, body, sig] = m;
  try {
    const ok = await crypto.subtle.verify("HMAC", await key(secret), fromB64url(sig), new TextEncoder().encode(body));
    if (!ok) return null;
    const parsed = Claims.safeParse(JSON.parse(new TextDecoder().decode(fromB64url(body))));
    if (!parsed.success || parsed.data.exp <= now) return null;
    const { exp: _, ...claims } = parsed.data;
    return claims;
  } catch {
    return null;
  }
}
