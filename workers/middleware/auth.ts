import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { bearerToken } from "../lib/credentials.ts";
import { gateKey } from "../lib/key-gate.ts";
import { resolveClientKey } from "../lib/keys.ts";

/**
 * Bearer API keys for clients (static `API_KEYS` or managed keys, lib/keys.ts); sets `owner`, `keyId` and
 * `allowedModels`, then applies a managed key's own limits (lib/key-gate.ts). index.ts mounts it once, per prefix.
 */
export const apiKeyAuth = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerToken(c.req.header("Authorization"));
  if (!token) throw new ApiError("unauthorized", "missing `Authorization: Bearer <api key>` header");
  const key = await resolveClientKey(c.env, token);
  if (key === null) throw new ApiError("unauthorized", "unknown API key");
  if (typeof key === "string") throw new ApiError("unauthorized", key);
  c.set("owner", key.owner);
  c.set("keyId", key.id);
  c.set("allowedModels", key.allowed_models ?? undefined);
  await gateKey(c, key);
  await next();
});
