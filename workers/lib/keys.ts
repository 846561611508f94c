import type { StoredKey } from "../../durable-objects/key-registry.ts";
import { keyRegistry } from "../../durable-objects/stubs.ts";
import { SHARED_OWNER } from "../../durable-objects/tenancy.ts";

// API keys as the router resolves them. Managed keys (`ek_<id>_<secret>`, durable-objects/key-registry.ts): the id
// finds the row, the secret's SHA-256 is compared with the stored digest in constant time; the secret is 32
// random bytes, so a plain digest (no salt, no slow hash) is enough: nothing can be guessed from it. Static keys
// (`API_KEYS`, development and tests) keep working: unlimited, every model, an id derived from the key.
//
// Lookups go through a per-isolate cache of KEY_CACHE_TTL_MS: a revoke or rotation takes effect at once in the
// isolate that made it (it drops its entry) and within KEY_CACHE_TTL_MS in every other isolate. Keys with a rate
// limit or a budget are admitted by the registry on every request (middleware/auth.ts), which refuses a revoked
// key at once everywhere. Expiry is checked on every request against the cached row.

export const KEY_CACHE_TTL_MS = 5000;
const KEY_FORMAT = /^ek_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** A resolved client key: what auth puts on the context and what the limits need. */
export interface ClientKey {
  id: string;
  owner: string;
  managed: boolean;
  allowed_models: string[] | null;
  rate_limit: number | null;
  token_budget: number | null;
  expires_at: number | null;
}

const parsed = new Map<string, Map<string, string>>();

/** `API_KEYS` is `owner:key,owner:key`; parsed once per isolate into key → owner. */
function keyTable(raw: string): Map<string, string> {
  let table = parsed.get(raw);
  if (!table) {
    table = new Map();
    for (const pair of raw.split(",")) {
      const i = pair.indexOf(":");
      const owner = pair.slice(0, i).trim();
      // `*` owns the shared sessions (durable-objects/tenancy.ts): a key by that name would see everyone's tasks.
      if (i > 0 && owner && owner !== SHARED_OWNER) table.set(pair.slice(i + 1).trim(), owner);
    }
    parsed.set(raw, table);
  }
  return table;
}

/** The owner name of a static API key (`API_KEYS`), else undefined. */
export function apiKeyOwner(env: Env, token: string): string | undefined {
  return keyTable(env.API_KEYS).get(token);
}

/** The owners of the static API keys. */
export const staticOwners = (env: Env): string[] => [...new Set(keyTable(env.API_KEYS).values())];

const hex = (bytes: ArrayBuffer | Uint8Array) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

export async function sha256Hex(text: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Constant-time equality of two strings, compared as their SHA-256 digests (equal lengths, whatever the inputs). */
export async function sameSecret(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, db] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  return crypto.subtle.timingSafeEqual(da, db);
}

/** The id and secret of a managed key's token, else null (not that format). */
export function parseManagedKey(token: string): { id: string; secret: string } | null {
  const m = KEY_FORMAT.exec(token);
  return m ? { id: m[1], secret: m[2] } : null;
}

/** A fresh secret for key `id`: the token (shown once), its digest and its displayable prefix. */
export async function mintSecret(id: string): Promise<{ token: string; hash: string; prefix: string }> {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const secret = btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
  return { token: `ek_${id}_${secret}`, hash: await sha256Hex(secret), prefix: `ek_${id}_${secret.slice(0, 4)}` };
}

export const newKeyId = () => hex(crypto.getRandomValues(new Uint8Array(8)));

const cache = new Map<string, { key: StoredKey | null; at: number }>();

/** Drops a key from this isolate's cache (after a revoke or rotation made here). */
export function forgetKey(id: string): void {
  cache.delete(id);
}

async function storedKey(env: Env, id: string, fresh = false): Promise<StoredKey | null> {
  const hit = cache.get(id);
  if (hit && !fresh && Date.now() - hit.at < KEY_CACHE_TTL_MS) return hit.key;
  const key = await keyRegistry(env).get(id);
  if (cache.size > 10_000) cache.clear();
  cache.set(id, { key, at: Date.now() });
  return key;
}

const staticIds = new Map<string, string>();

/** A static key's stable id: `static-` and 12 hex digits of its digest (the key itself is never shown). */
async function staticKeyId(token: string): Promise<string> {
  let id = staticIds.get(token);
  if (!id) {
    id = `static-${(await sha256Hex(token)).slice(0, 12)}`;
    staticIds.set(token, id);
  }
  return id;
}

/** Why a managed key is refused (revoked, expired, unknown or wrong secret), else null. */
export type KeyRefusal = "unknown API key" | "API key revoked" | "API key expired";

/** The client key a bearer token is, or why it is refused; null: not an API key at all. */
export async function resolveClientKey(env: Env, token: string): Promise<ClientKey | KeyRefusal | null> {
  const owner = apiKeyOwner(env, token);
  if (owner) {
    const none = { allowed_models: null, rate_limit: null, token_budget: null, expires_at: null };
    return { id: await staticKeyId(token), owner, managed: false, ...none };
  }
  const parsed = parseManagedKey(token);
  if (!parsed) return null;
  const hash = await sha256Hex(parsed.secret);
  let key = await storedKey(env, parsed.id);
  // A cached row with another digest may predate a rotation made elsewhere: the registry has the last word.
  if (key && !(await sameSecret(hash, key.hash))) key = await storedKey(env, parsed.id, true);
  if (!key || !(await sameSecret(hash, key.hash))) return "unknown API key";
  if (key.revoked_at !== null) return "API key revoked";
  if (key.expires_at !== null && key.expires_at <= Date.now()) return "API key expired";
  const { id, allowed_models, rate_limit, token_budget, expires_at } = key;
  return { id, owner: key.owner, managed: true, allowed_models, rate_limit, token_budget, expires_at };
}
