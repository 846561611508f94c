import type { Context } from "hono";
import type { Admission } from "../../durable-objects/key-registry.ts";
import { keyRegistry } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { entryForNetworkModel, modelAllowed, resolveModel } from "../gateway/model-map.ts";
import { ApiError } from "./api-error.ts";
import type { ClientKey } from "./keys.ts";
import { isWork, requestState } from "./usage-record.ts";

// A managed key's own limits, before its request does any work (middleware/auth.ts):
//   - allowed models: a REST work request must name an allowed `model` (the session then refuses any other model,
//     durable-objects/session-queue/admission.ts); the gateway (/openai/v1) checks its public names itself;
//   - rate limit (requests per minute) and token budget: one `admit` call to the KeyRegistry, which counts the
//     request and reserves `body bytes + max_tokens` tokens (a bound on the charged prompt — charged prompt
//     tokens never exceed the prompt's bytes — plus the completion cap). Keys with neither make no call.
// Counted once per client request: an in-process request (lib/rest-call.ts) is its outer request's, except
// that work reached through a non-work outer request (an MCP or A2A call) reserves budget on its REST request.

/** Tokens reserved for the completion of a work request that names no `max_tokens`. */
export const DEFAULT_RESERVED_COMPLETION = 256;
const GATEWAY = /^\/openai\//;

interface BodyFacts {
  bytes: number;
  model?: string;
  max_tokens?: number;
}

/** What the gate needs from a JSON body, read from a copy (the route reads the body as usual). */
async function bodyFacts(c: Context<AppEnv>): Promise<BodyFacts> {
  const text = c.req.raw.body ? await c.req.raw.clone().text() : "";
  const facts: BodyFacts = { bytes: new TextEncoder().encode(text).length };
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    if (typeof body.model === "string") facts.model = body.model;
    const max = body.max_tokens ?? body.max_completion_tokens;
    if (typeof max === "number" && Number.isFinite(max) && max > 0) facts.max_tokens = Math.ceil(max);
  } catch {
    // Not JSON: the route answers 400; the reservation is the default.
  }
  return facts;
}

/** Whether `allowed` names the model (its network id, or any public name of the model map's entry for it). */
export function allowsModel(env: Env, allowed: readonly string[], model: string): boolean {
  if (allowed.includes(model)) return true;
  const entry = resolveModel(env, model) ?? entryForNetworkModel(env, model);
  return entry !== null && modelAllowed(entry, allowed);
}

function refusal(c: Context<AppEnv>, r: Exclude<Admission, { ok: true }>): ApiError {
  if (r.code === "unauthorized") return new ApiError("unauthorized", r.message);
  if (r.code === "rate_limited") {
    c.header("Retry-After", String(r.retry_after_s));
    return new ApiError(
      "rate_limited",
      `this API key's limit of ${r.limit} requests per minute is reached: retry after ${r.retry_after_s} s`,
      {
        scope: "key_rate_limit",
        limit_per_minute: r.limit,
        retry_after_s: r.retry_after_s,
      },
    );
  }
  return new ApiError("budget_exhausted", "this API key's token budget is used up (nothing was submitted)", {
    token_budget: r.token_budget,
    tokens_used: r.tokens_used,
    tokens_reserved: r.reserved,
  });
}

/** Applies `key`'s model list, rate limit and budget to the request of `c`; throws the refusal. */
export async function gateKey(c: Context<AppEnv>, key: ClientKey): Promise<void> {
  const st = requestState(c);
  if (st.key) return; // mounted twice on one path: gated once
  st.key = key;
  const work = isWork(c);
  const outer = st.outer;
  const needModel = key.allowed_models !== null && work && !GATEWAY.test(c.req.path) && !(outer && GATEWAY.test(outer.req.path));
  const needBudget = key.token_budget !== null && work && !(outer && requestState(outer).budgetGated);
  const needCount = key.rate_limit !== null && !outer;
  if (!needModel && !needBudget && !needCount) return;
  const facts = needModel || needBudget ? await bodyFacts(c) : null;
  if (facts?.model) st.model = facts.model;
  if (needModel && !(facts?.model && allowsModel(c.env, key.allowed_models!, facts.model))) {
    throw new ApiError("model_not_allowed", `this API key may use only: ${key.allowed_models!.join(", ")} (name one in \`model\`)`, {
      model: facts?.model ?? null,
      allowed_models: key.allowed_models,
    });
  }
  if (!needBudget && !needCount) return;
  const reserve = needBudget ? facts!.bytes + (facts!.max_tokens ?? DEFAULT_RESERVED_COMPLETION) : null;
  const r = await keyRegistry(c.env).admit(key.id, { reserve, count: needCount });
  if (!r.ok) throw refusal(c, r);
  st.budgetGated = needBudget;
  st.reservation = r.reservation;
}
