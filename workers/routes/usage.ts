import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { UsageQuery } from "../lib/key-schemas.ts";
import { query } from "../lib/request-validation.ts";
import { usageReport } from "../lib/usage-query.ts";

// GET /api/v1/usage (and /openai/v1/usage): the usage of the caller's owner — every key of that owner, by key,
// model and time bucket (minute or day), between `from` and `to`. Another owner's usage is not reachable here:
// the owner is the authenticated key's, never a parameter.

export const usage = new Hono<AppEnv>();

usage.get("/", query(UsageQuery), async (c) => {
  const q = c.req.valid("query");
  return c.json({ owner: c.get("owner"), ...(await usageReport(c.env, [c.get("owner")], q)) });
});
