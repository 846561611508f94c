import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { apiKeyOwner, bearerToken } from "../lib/credentials.ts";

/** Bearer API keys for clients; sets `owner` to the key's owner name. index.ts mounts it once, per prefix. */
export const apiKeyAuth = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerToken(c.req.header("Authorization"));
  if (!token) throw new ApiError("unauthorized", "missing `Authorization: Bearer <api key>` header");
  const owner = apiKeyOwner(c.env, token);
  if (!owner) throw new ApiError("unauthorized", "unknown API key");
  c.set("owner", owner);
  await next();
});
