import type { MinerClaims } from "../../durable-objects/miner-sockets.ts";

// Miner bearer tokens: the claims NodePool verified at registration, HMAC-signed with MINER_TOKEN_SECRET so
// the router checks a miner's WebSocket upgrade without a round trip to the pool.

const TTL_MS = 24 * 60 * 60_000;
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
const fromB64url = (s: string) => Uint8Array.from(atob(s.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));

export async function issueMinerToken(
  secret: string,
  claims: MinerClaims,
  now = Date.now(),
): Promise<{ token: string; expires_at: number }> {
  const expires_at = now + TTL_MS;
  const body = b64url(new TextEncoder().encode(JSON.stringify({ ...claims, exp: expires_at })));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await key(secret), new TextEncoder().encode(body)));
  return { token: `${body}.${b64url(sig)}`, expires_at };
}

/** Returns the claims of a valid, unexpired token, else null. */
export async function verifyMinerToken(secret: string, token: string, now = Date.now()): Promise<MinerClaims | null> {
  const [body, sig] = token.split(".");
  if (!body || !sig) return null;
  try {
    const ok = await crypto.subtle.verify("HMAC", await key(secret), fromB64url(sig), new TextEncoder().encode(body));
    if (!ok) return null;
    const { exp, ...claims } = JSON.parse(new TextDecoder().decode(fromB64url(body))) as MinerClaims & { exp: number };
    return exp > now ? claims : null;
  } catch {
    return null;
  }
}
