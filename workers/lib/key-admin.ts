import type { KeyChanges, Manager } from "../../durable-objects/key-registry.ts";
import { keyRegistry } from "../../durable-objects/stubs.ts";
import { ApiError } from "./api-error.ts";
import type { KeySettings } from "./key-schemas.ts";
import { keyView } from "./key-schemas.ts";
import { forgetKey, mintSecret, newKeyId } from "./keys.ts";

// Creating, rotating and revoking managed keys, for the admin (routes/admin.ts) and for owners (routes/keys.ts).
// The key material exists only here, in the one answer that shows it; the registry stores its SHA-256.

/** Creates a key for `owner`; `parent`: the self-service key that creates it (its limits bound the new key's). */
export async function createKey(env: Env, owner: string, s: KeySettings, parent: string | null) {
  if (s.expires_at !== undefined && s.expires_at <= Date.now()) throw new ApiError("invalid_request", "expires_at is in the past");
  const id = newKeyId();
  const { token, hash, prefix } = await mintSecret(id);
  const created = await keyRegistry(env).create(
    {
      id,
      owner,
      name: s.name,
      hash,
      prefix,
      created_at: Date.now(),
      expires_at: s.expires_at ?? null,
      allowed_models: s.allowed_models ?? null,
      rate_limit: s.rate_limit ?? null,
      token_budget: s.token_budget ?? null,
      created_by: parent,
    },
    parent,
  );
  if (!created.ok) throw new ApiError(created.code, created.message);
  // The only time the key is shown.
  return { ...keyView(created.key), key: token };
}

const notFound = (id: string) => new ApiError("not_found", `no API key ${id}`);

/** A new secret for key `id` (same id and settings); the old secret stops working. */
export async function rotateKey(env: Env, id: string, manager: Manager) {
  const { token, hash, prefix } = await mintSecret(id);
  const key = await keyRegistry(env).rotate(id, hash, prefix, manager);
  if (!key) throw notFound(id);
  forgetKey(id);
  return { ...keyView(key), key: token };
}

/** The admin's change of a key's settings (takes effect at once here, within the cache's lifetime elsewhere). */
export async function updateKey(env: Env, id: string, changes: KeyChanges) {
  const key = await keyRegistry(env).update(id, changes);
  if (!key) throw notFound(id);
  forgetKey(id);
  return keyView(key);
}

export async function revokeKey(env: Env, id: string, manager: Manager) {
  const key = await keyRegistry(env).revoke(id, manager);
  if (!key) throw notFound(id);
  forgetKey(id);
  return keyView(key);
}

export async function findKey(env: Env, id: string, manager: Manager) {
  const key = await keyRegistry(env).find(id, manager);
  if (!key) throw notFound(id);
  return keyView(key);
}

export async function listKeys(env: Env, manager: Manager) {
  return { object: "list" as const, data: (await keyRegistry(env).list(manager)).map(keyView) };
}
