import { Hono } from "hono";
import type { z } from "zod";
import type { AppEnv } from "../env.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { DelegateV1, DelegateV2, Factcheck, ValidateV1, ValidateV2 } from "../lib/work-schemas.ts";
import type { PriceKey } from "../x402/config.ts";
import { markPaid } from "../x402/credential.ts";
import { x402Gate } from "../x402/gate.ts";

// x402 routes: no API key, a payment per request (workers/x402/: verify before the work, settle after a successful
// answer, nothing settled for a failed one). Each validates its body with its REST counterpart's schema first (a 400
// costs no payment), then runs the REST route in-process as owner `x402` (like the trial routes), so the answer is
// the REST route's own, streamed when it streams. Prices: X402_ROUTE_PRICES / X402_PRICE_BASE plus max_tokens ×
// X402_PRICE_PER_TOKEN (validate and factcheck: the rubric's own cap, priced as RUBRIC_TOKENS).

export const x402 = new Hono<AppEnv>();

/** Tokens a validate / factcheck request is priced for: their rubric prompt's answer is short. */
const RUBRIC_TOKENS = 64;
const DEFAULT_TOKENS = 128; // CompletionBody's and delegate's default max_tokens

/** Where max_tokens sits in a family's body. */
type TokensAt = "top" | "execution" | "none";

function tokensOf(body: Record<string, unknown> | null, at: TokensAt): number {
  if (at === "none") return RUBRIC_TOKENS;
  const holder = at === "top" ? body : (body?.execution as Record<string, unknown> | undefined);
  const n = holder?.max_tokens;
  return typeof n === "number" && Number.isFinite(n) ? n : DEFAULT_TOKENS;
}

x402.get(
  "/v1/x402/ping",
  x402Gate({ key: "ping", tokens: () => 0, description: "x402 ping: a paid no-op to check a client's payments" }),
  (c) => c.json({ ok: true, paid: true, payer: c.get("x402Payer") ?? null, request_id: c.get("requestId") }),
);

/** One paid route: `target` is the REST route it runs in-process. */
function route(path: string, target: string, schema: z.ZodType, key: PriceKey, at: TokensAt, description: string) {
  x402.post(path, jsonBody(schema), x402Gate({ key, tokens: (b) => tokensOf(b, at), description }), async (c) => {
    const headers = new Headers({ "content-type": "application/json" });
    const ip = c.req.header("cf-connecting-ip");
    if (ip) headers.set("cf-connecting-ip", ip);
    const sid = c.req.param("sessionId");
    const url = new URL(sid ? `${target}/${encodeURIComponent(sid)}` : target, c.req.url);
    const req = new Request(url, { method: "POST", headers, body: JSON.stringify(await c.req.json()), signal: c.req.raw.signal });
    return c.get("restFetch")(markPaid(req, c.get("x402Payer") ?? ""));
  });
}

route(
  "/v1/x402/completions/:sessionId?",
  "/api/v1/completions",
  CompletionBody,
  "completion",
  "top",
  "A completion from the network's miners",
);
route("/v1/x402/delegate", "/api/v1/delegate", DelegateV1, "delegate", "top", "Delegate a task (v1)");
route("/v2/x402/delegate", "/api/v2/delegate", DelegateV2, "delegate", "execution", "Delegate a task (v2)");
route("/v1/x402/validate", "/api/v1/validate", ValidateV1, "validate", "none", "Validate a result (v1)");
route("/v2/x402/validate", "/api/v2/validate", ValidateV2, "validate", "none", "Validate a result (v2)");
route("/v1/x402/factcheck", "/api/v1/factcheck", Factcheck, "factcheck", "none", "Fact-check a claim");
route("/v1/x402/fact-check", "/api/v1/factcheck", Factcheck, "factcheck", "none", "Fact-check a claim");
