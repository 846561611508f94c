import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { DEFAULT_MAX_TOKENS } from "../gateway/run.ts";
import { x402Config } from "./config.ts";
import { type GateOptions, x402Gate } from "./gate.ts";

// The gateway's OpenAI routes paid with x402 when no key is presented (mounted ahead of the API-key check on
// /openai/*): chat/completions and completions priced as `chat` for their max_tokens, embeddings as `embedding`.
// With an Authorization header, or with x402 off, this steps aside and the key check answers as before.

const PAID: Record<string, GateOptions> = {
  "/openai/v1/chat/completions": {
    key: "chat",
    tokens: (b) => num(b?.max_completion_tokens) ?? num(b?.max_tokens) ?? DEFAULT_MAX_TOKENS.chat,
    description: "OpenAI-compatible chat completion",
  },
  "/openai/v1/completions": {
    key: "chat",
    tokens: (b) => num(b?.max_tokens) ?? DEFAULT_MAX_TOKENS.text,
    description: "OpenAI-compatible completion",
  },
  "/openai/v1/embeddings": { key: "embedding", tokens: () => 0, description: "OpenAI-compatible embeddings" },
};

const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

const gates = new Map(Object.entries(PAID).map(([path, opts]) => [path, x402Gate(opts)]));

export const gatewayPayment = createMiddleware<AppEnv>(async (c, next) => {
  const gate = c.req.method === "POST" ? gates.get(c.req.path) : undefined;
  if (!gate || c.req.header("authorization") || !safeEnabled(c.env)) return next();
  return gate(c, next);
});

function safeEnabled(env: Env): boolean {
  try {
    return x402Config(env) !== null;
  } catch {
    return true; // misconfigured: let the gate answer its 503
  }
}
