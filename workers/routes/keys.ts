import { Hono } from "hono";
import type { Manager } from "../../durable-objects/key-registry.ts";
import type { AppEnv } from "../env.ts";
import { createKey, findKey, listKeys, revokeKey, rotateKey } from "../lib/key-admin.ts";
import { KeyIdParam, KeySettings } from "../lib/key-schemas.ts";
import { jsonBody, params } from "../lib/request-validation.ts";

// Self-service keys: /api/v1/keys, with one of the owner's own keys. An owner sees its own keys only (another
// owner's key id is 404, as an unknown one). A managed key creates keys bounded by its own settings — budget
// and rate limit are moved out of it, models and expiry can only narrow (durable-objects/key-registry.ts) — and
// rotates or revokes itself and the keys it created; a static API_KEYS key (the operator's) manages all its
// owner's keys, without limits.

export const keys = new Hono<AppEnv>();

function manager(c: { get(k: "owner"): string; get(k: "keyId"): string }): Manager {
  const id = c.get("keyId");
  return { owner: c.get("owner"), caller: id.startsWith("static-") ? null : id };
}

keys.get("/", async (c) => c.json(await listKeys(c.env, { owner: c.get("owner"), caller: null })));

keys.post("/", jsonBody(KeySettings), async (c) => {
  const { caller } = manager(c);
  return c.json(await createKey(c.env, c.get("owner"), c.req.valid("json"), caller), 201);
});

keys.get("/:id", params(KeyIdParam), async (c) =>
  c.json(await findKey(c.env, c.req.valid("param").id, { owner: c.get("owner"), caller: null })),
);

keys.post("/:id/rotate", params(KeyIdParam), async (c) => c.json(await rotateKey(c.env, c.req.valid("param").id, manager(c))));

keys.post("/:id/revoke", params(KeyIdParam), async (c) => c.json(await revokeKey(c.env, c.req.valid("param").id, manager(c))));
