import { type Context, Hono } from "hono";
import { createMiddleware } from "hono/factory";
import type { z } from "zod";
import { trialQuota } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { ensureConfiguredSession } from "../lib/sessions.ts";
import { markTrial, type TrialConfig, trialConfig } from "../lib/trial.ts";
import { DelegateV1, DelegateV2, Factcheck, ValidateV1, ValidateV2 } from "../lib/work-schemas.ts";
import { clientIp, ipBucket } from "../middleware/rate-limit.ts";

// Trial routes: no API key, a quota per client IP (TRIAL_QUOTA, a sliding window in durable-objects/trial-quota.ts).
// Each validates its body with its REST counterpart's schema (a 400 here costs no quota), forces the trial
// session and the max_tokens cap, takes the quota, then runs the REST route in-process as owner `trial`
// (lib/trial.ts), so the answer is the REST route's own. v3 (consensus fan-out) has no trial route.

export const trial = new Hono<AppEnv>();

const enabled = createMiddleware<AppEnv>(async (c, next) => {
  if (!trialConfig(c.env))
    throw new ApiError("not_found", `no route for ${c.req.method} ${c.req.path}: trial routes are off (TRIAL_QUOTA)`);
  await next();
});
trial.use("/v1/trial/*", enabled);
trial.use("/v2/trial/*", enabled);

/** Where max_tokens sits in a family's body, if it has one (validate and factcheck use the rubric's own). */
type TokensAt = "top" | "execution" | "none";

const invalid = (path: string, message: string) => new ApiError("invalid_request", `${path}: ${message}`, [{ path, message }]);

/** The client's body with the trial session and a max_tokens within the cap (absent: the cap). */
function trialBody(raw: Record<string, unknown>, cfg: TrialConfig, tokensAt: TokensAt, pathId: string | undefined) {
  for (const [path, id] of [
    ["sessionId", pathId],
    ["session_id", raw.session_id],
  ] as const) {
    if (id !== undefined && String(id) !== cfg.sessionId) throw invalid(path, `trial routes run on session ${cfg.sessionId} only`);
  }
  const body: Record<string, unknown> = { ...raw, session_id: cfg.sessionId };
  const holder = tokensAt === "top" ? body : tokensAt === "execution" ? { ...(body.execution as object | undefined) } : null;
  if (holder) {
    const h = holder as Record<string, unknown>;
    if (typeof h.max_tokens === "number" && h.max_tokens > cfg.maxTokens) {
      throw invalid(
        tokensAt === "top" ? "max_tokens" : "execution.max_tokens",
        `at most ${cfg.maxTokens} on trial routes (TRIAL_MAX_TOKENS)`,
      );
    }
    h.max_tokens ??= cfg.maxTokens;
    if (tokensAt === "execution") body.execution = h;
  }
  return body;
}

/** Takes one request of the client IP's quota, or throws 429 with Retry-After. */
async function takeQuota(c: Context<AppEnv>, cfg: TrialConfig) {
  const quota = trialQuota(c.env, ipBucket(clientIp(c)));
  const taken = await quota.take(cfg.limit, cfg.windowMs);
  if (taken.ok) return { quota, at: taken.at };
  c.header("Retry-After", String(taken.retry_after_s));
  throw new ApiError(
    "trial_quota_exceeded",
    `trial quota of ${cfg.limit} requests per ${cfg.windowMs / 1000} s used up: retry after ${taken.retry_after_s} s`,
    {
      limit: cfg.limit,
      window_s: cfg.windowMs / 1000,
      retry_after_s: taken.retry_after_s,
    },
  );
}

/** One trial route: `target` is the REST route it runs in-process. */
function route(path: string, target: string, schema: z.ZodType, tokensAt: TokensAt) {
  trial.post(path, jsonBody(schema), async (c) => {
    const cfg = trialConfig(c.env)!;
    const body = trialBody(await c.req.json(), cfg, tokensAt, c.req.param("sessionId"));
    // The quota first, so a client over it costs one object call; then the trial session, created on first
    // use with few miners so trial work cannot take over the pool (a failure there gives the request back).
    const { quota, at } = await takeQuota(c, cfg);
    await ensureConfiguredSession(c.env, cfg.sessionId, "trial", { max_miners: cfg.maxMiners, redundancy: 1 }).catch(async (err) => {
      await quota.refund(at);
      throw err;
    });
    const headers = new Headers({ "content-type": "application/json" });
    const ip = c.req.header("cf-connecting-ip");
    if (ip) headers.set("cf-connecting-ip", ip);
    const req = new Request(new URL(target, c.req.url), { method: "POST", headers, body: JSON.stringify(body), signal: c.req.raw.signal });
    const res = await c.get("restFetch")(markTrial(req));
    // Refused before any work (a deadline or context check): the quota is given back.
    if (res.status === 400) await quota.refund(at);
    return res;
  });
}

route("/v1/trial/completions/:sessionId?", "/api/v1/completions", CompletionBody, "top");
route("/v1/trial/delegate", "/api/v1/delegate", DelegateV1, "top");
route("/v2/trial/delegate", "/api/v2/delegate", DelegateV2, "execution");
route("/v1/trial/validate", "/api/v1/validate", ValidateV1, "none");
route("/v2/trial/validate", "/api/v2/validate", ValidateV2, "none");
route("/v1/trial/factcheck", "/api/v1/factcheck", Factcheck, "none");
route("/v1/trial/fact-check", "/api/v1/factcheck", Factcheck, "none");
