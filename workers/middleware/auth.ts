import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { bearerToken } from "../lib/credentials.ts";
import { gateKey } from "../lib/key-gate.ts";
import { resolveClientKey } from "../lib/keys.ts";
import { isTrialRequest, TRIAL_OWNER } from "../lib/trial.ts";
import { X402_OWNER } from "../x402/config.ts";
import { paidBy } from "../x402/credential.ts";

/**
 * Bearer API keys for clients (static `API_KEYS` or managed keys, lib/keys.ts); sets `owner`, `keyId` and
 * `allowedModels`, then applies a managed key's own limits (lib/key-gate.ts). index.ts mounts it once, per prefix.
 */
/**
 * Mounted first: marks a trial route's in-process request on its context while c.req.raw is still the Request
 * routes/trial.ts made (middleware/body-limits.ts may wrap it in another).
 */
export const trialCredential = createMiddleware<AppEnv>(async (c, next) => {
  if (isTrialRequest(c.req.raw)) c.set("trial", true);
  // An x402 route's in-process request (routes/x402.ts), its payment verified and held: the payer.
  const payer = paidBy(c.req.raw);
  if (payer !== undefined) c.set("x402Payer", payer);
  await next();
});

export const apiKeyAuth = createMiddleware<AppEnv>(async (c, next) => {
  // A trial route's in-process request (routes/trial.ts): the shared trial owner, no key, so no key limits.
  if (c.get("trial")) {
    c.set("owner", TRIAL_OWNER);
    c.set("keyId", TRIAL_OWNER);
    c.set("allowedModels", undefined);
    return next();
  }
  // Paid with x402 (workers/x402/gate.ts verified and holds the payment): the shared x402 owner, no key.
  if (c.get("x402Payer") !== undefined) {
    c.set("owner", X402_OWNER);
    c.set("keyId", X402_OWNER);
    c.set("allowedModels", undefined);
    return next();
  }
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
