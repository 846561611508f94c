import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { payloadMax } from "../lib/payload-store.ts";

// Request body limits per route, checked on the declared length and on the bytes as they stream in (hono's
// bodyLimit), before anything parses them. Only the routes that carry off-chain payloads take large bodies.

const KiB = 1024;
const MiB = 1024 * KiB;
/** Room for the JSON around a payload of PAYLOAD_MAX_BYTES (field names, parameters, base64 padding). */
const ENVELOPE = 64 * KiB;

interface Rule {
  path: RegExp;
  max: (env: Env) => number;
}

const RULES: Rule[] = [
  // A client-sealed prompt (routes/completions-sealed.ts): its envelope of up to PAYLOAD_MAX_BYTES, in base64.
  { path: /^\/api\/v3\/completions\/[^/]+\/sealed$/, max: (env) => Math.ceil((payloadMax(env) + 64) / 3) * 4 + ENVELOPE },
  // v2/v3 completions: prompts up to PAYLOAD_MAX_BYTES (8 MiB by default), which go to R2.
  { path: /^\/api\/v[23]\/completions(\/|$)/, max: (env) => payloadMax(env) + ENVELOPE },
  // A miner's signed off-chain result write (base64 content).
  { path: /^\/api\/v3\/offchain\/result$/, max: (env) => payloadMax(env) + ENVELOPE },
  // Inline work: v1 completions, the hosted entry, delegate / validate / factcheck of every version.
  { path: /^\/(api\/v1\/completions|v1\/completions|api\/v[123]\/(delegate|validate|factcheck|fact-check))(\/|$)/, max: () => MiB },
  // Their trial counterparts (routes/trial.ts): the same bodies, the same limit.
  { path: /^\/api\/v[12]\/trial\/(completions|delegate|validate|factcheck|fact-check)(\/|$)/, max: () => MiB },
  // Embeddings: 16 texts, 64 KiB of UTF-8 in all (lib/embedding-schemas.ts), as JSON with escapes.
  { path: /^\/api\/v1\/embeddings(\/|$)/, max: () => 512 * KiB },
  // The OpenAI-compatible API (workers/gateway/): chat messages, prompts, embedding inputs.
  { path: /^\/openai\/v1\/(chat\/completions|completions|embeddings)$/, max: () => MiB },
  // A2A JSON-RPC (workers/a2a/): a message's data part carries an inline work body, plus the JSON-RPC envelope.
  { path: /^\/api\/v1\/a2a$/, max: () => MiB + ENVELOPE },
  // MCP Streamable HTTP (workers/mcp/routes.ts): a tool call may carry a v3 completion's prompt, as REST v3 does.
  { path: /^\/mcp(\/messages)?$/, max: (env) => payloadMax(env) + ENVELOPE },
  // MCP legacy messages (workers/mcp/legacy.ts): one JSON-RPC message, a tool call carrying an inline-work body.
  { path: /^\/(mcp\/legacy\/messages|messages)$/, max: () => MiB },
];
/** Everything else: sessions, payload keys and allowlists, miner registration. */
const DEFAULT_MAX = 64 * KiB;

const limiters = new Map<number, MiddlewareHandler<AppEnv>>();

function limiter(max: number): MiddlewareHandler<AppEnv> {
  let mw = limiters.get(max);
  if (!mw) {
    mw = bodyLimit({
      maxSize: max,
      onError: () => {
        throw new ApiError("payload_too_large", `request body exceeds ${max} bytes, this route's limit`, { max_bytes: max });
      },
    });
    limiters.set(max, mw);
  }
  return mw;
}

/** The body limit of a path, bytes. */
export function bodyLimitOf(env: Env, path: string): number {
  return RULES.find((r) => r.path.test(path))?.max(env) ?? DEFAULT_MAX;
}

export const bodyLimits: MiddlewareHandler<AppEnv> = (c, next) => limiter(bodyLimitOf(c.env, c.req.path))(c, next);
