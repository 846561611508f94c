import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";

const parsed = new Map<string, Map<string, string>>();

/** `API_KEYS` is `owner:key,owner:key`; parsed once per isolate. */
export function keyTable(raw: string): Map<string, string> {
  let table = parsed.get(raw);
  if (!table) {
    table = new Map();
    for (const pair of raw.split(",")) {
      const i = pair.indexOf(":");
      if (i > 0) table.set(pair.slice(i + 1).trim(), pair.slice(0, i).trim());
    }
    parsed.set(raw, table);
  }
  return table;
}

/** Bearer API keys for clients; sets `owner` to the key's owner name. */
export const apiKeyAuth = createMiddleware<AppEnv>(async (c, next) => {
  // Routes that check the key themselves may also sit under a prefix that already did (/api/v1/*).
  if (c.get("owner")) return next();
  const header = c.req.header("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new ApiError("unauthorized", "missing `Authorization: Bearer <api key>` header");
  const owner = keyTable(c.env.API_KEYS).get(match[1]);
  if (!owner) throw new ApiError("unauthorized", "unknown API key");
  c.set("owner", owner);
  await next();
});
