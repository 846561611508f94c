import { Hono } from "hono";
import { handoverProgress } from "../../durable-objects/pool-handover.ts";
import { keyRegistry } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { createKey, findKey, listKeys, revokeKey, rotateKey, updateKey } from "../lib/key-admin.ts";
import { AdminKeyBody, AdminKeyPatch, AdminKeyQuery, AdminUsageQuery, KeyIdParam } from "../lib/key-schemas.ts";
import { staticOwners } from "../lib/keys.ts";
import { jsonBody, params, query } from "../lib/request-validation.ts";
import { REPORT_OWNERS_MAX, usageReport } from "../lib/usage-query.ts";
import { adminAuth } from "../middleware/admin-auth.ts";

// The key admin API, /admin/*, with `Authorization: Bearer <ADMIN_SECRET>` (middleware/admin-auth.ts): keys of
// any owner (key material only in the create and rotate answers) and everyone's usage.

export const admin = new Hono<AppEnv>();

admin.use(adminAuth);

const ALL = { owner: null, caller: null };

admin.post("/keys", jsonBody(AdminKeyBody), async (c) => {
  const { owner, ...settings } = c.req.valid("json");
  return c.json(await createKey(c.env, owner, settings, null), 201);
});

admin.get("/keys", query(AdminKeyQuery), async (c) =>
  c.json(await listKeys(c.env, { owner: c.req.valid("query").owner ?? null, caller: null })),
);

admin.get("/keys/:id", params(KeyIdParam), async (c) => c.json(await findKey(c.env, c.req.valid("param").id, ALL)));

// A budget raised or a limit lifted (null), without a new secret.
admin.patch("/keys/:id", params(KeyIdParam), jsonBody(AdminKeyPatch), async (c) =>
  c.json(await updateKey(c.env, c.req.valid("param").id, c.req.valid("json"))),
);

admin.post("/keys/:id/rotate", params(KeyIdParam), async (c) => c.json(await rotateKey(c.env, c.req.valid("param").id, ALL)));

admin.post("/keys/:id/revoke", params(KeyIdParam), async (c) => c.json(await revokeKey(c.env, c.req.valid("param").id, ALL)));

// A pool handover after POOL_SHARDS changed (durable-objects/pool-handover.ts): miners not moved yet, per old shard;
// null while POOL_SHARDS_FROM is unset. The operator empties POOL_SHARDS_FROM once `left` stays at 0.
admin.get("/pool/handover", async (c) => c.json({ handover: await handoverProgress(c.env) }));

// Everyone's usage: one owner's, or every owner with a managed or static key (the first REPORT_OWNERS_MAX).
admin.get("/usage", query(AdminUsageQuery), async (c) => {
  const { owner, ...filter } = c.req.valid("query");
  const owners = owner ? [owner] : [...new Set([...staticOwners(c.env), ...(await keyRegistry(c.env).owners())])].sort();
  return c.json({ owners: owners.slice(0, REPORT_OWNERS_MAX), ...(await usageReport(c.env, owners.slice(0, REPORT_OWNERS_MAX), filter)) });
});
