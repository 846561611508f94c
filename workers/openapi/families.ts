import { JSONRPCMessageSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

// What the zod schemas cannot say about a route: its family (the tag /docs groups it under), who may call it, and,
// for the few routes that read their body without the house validators (JSON-RPC, the cancel's optional body), the
// body they take. Everything else in /openapi.json comes from the app's routes and their validators. A route whose
// path matches no family fails test/unit/openapi.test.ts, as does a family whose auth differs from what the route
// answers without credentials.

/** Who may call a route: the security requirement /openapi.json declares for it. */
export type Auth = "public" | "api_key" | "api_key_or_miner" | "miner_token" | "admin";

export interface Family {
  tag: string;
  description: string;
  /** OpenAPI paths (`{param}`) of the family; the first family that matches a path wins. */
  paths: RegExp;
  auth: Auth;
  /** Per-operation exceptions, `METHOD /path` → auth. */
  except?: Record<string, Auth>;
}

export const FAMILIES: Family[] = [
  { tag: "Docs", description: "This document and its reference page.", paths: /^\/(openapi\.json|docs)$/, auth: "public" },
  {
    tag: "Meta",
    description: "Liveness, the router's identity, network status.",
    paths: /^\/api\/v1\/(ping|about|info|status)$/,
    auth: "api_key",
    except: { "GET /api/v1/ping": "public", "GET /api/v1/about": "public" },
  },
  {
    tag: "Miners",
    description: "Miner registration (a wallet signature over a challenge), miner channels (miner token), the miner list.",
    paths: /^\/api\/v1\/(miners(\/.*)?|sessions\/\{sessionId\}\/connect)$/,
    auth: "miner_token",
    except: {
      "POST /api/v1/miners/challenge": "public",
      "POST /api/v1/miners/register": "public",
      "GET /api/v1/miners": "api_key",
      "GET /api/v1/miners/{address}/ledger": "api_key",
    },
  },
  {
    tag: "Chain",
    description: "The chain stake and payments settle on: token, staking contract, minimum stake; the development faucet.",
    paths: /^\/api\/v1\/chain(\/faucet)?$/,
    auth: "public",
  },
  { tag: "Sessions", description: "Sessions: a model, its miners, a deposit.", paths: /^\/api\/v1\/sessions(\/.*)?$/, auth: "api_key" },
  { tag: "Tasks", description: "A session's tasks: list, read, cancel.", paths: /^\/api\/v1\/tasks\//, auth: "api_key" },
  {
    tag: "Completions",
    description: "Completions (v1 on-chain shape, v2 off-chain payloads, v3 private payloads); the hosted envelope.",
    paths: /^\/(api\/v[123]|v1)\/completions(\/.*)?$/,
    auth: "api_key",
  },
  {
    tag: "Work",
    description: "Delegate, validate and fact-check: fanned out over session pools.",
    paths: /^\/api\/v[123]\/(delegate|validate|factcheck|fact-check)$/,
    auth: "api_key",
  },
  {
    tag: "Trial",
    description: "Completions, delegate, validate and fact-check without an API key: a quota per client IP (TRIAL_QUOTA), small caps.",
    paths: /^\/api\/v[12]\/trial\/(completions(\/\{sessionId\})?|delegate|validate|factcheck|fact-check)$/,
    auth: "public",
  },
  {
    tag: "x402",
    description:
      "Paid per request with x402 instead of an API key (402 with PAYMENT-REQUIRED, then PAYMENT-SIGNATURE or v1 X-PAYMENT; settlement in PAYMENT-RESPONSE and the receipt).",
    paths: /^\/api\/v[12]\/x402\/(ping|completions(\/\{sessionId\})?|delegate|validate|factcheck|fact-check)$/,
    auth: "public",
  },
  {
    tag: "Payloads",
    description: "Off-chain payloads and their encryption keys (API key for clients, miner token for miners).",
    paths: /^\/api\/(v1\/auth|v3\/offchain)\//,
    auth: "api_key_or_miner",
    except: { "POST /api/v3/offchain/result": "miner_token" },
  },
  {
    tag: "OpenAI-compatible",
    description: "The OpenAI API under /openai/v1: the official `openai` clients work with baseURL = <router>/openai/v1.",
    paths: /^\/openai\/v1(\/.*)?$/,
    auth: "api_key",
  },
  {
    tag: "Embeddings",
    description: "Embeddings served by miners' embedding models.",
    paths: /^\/api\/v1\/embeddings(\/.*)?$/,
    auth: "api_key",
  },
  { tag: "Keys", description: "An owner's managed API keys.", paths: /^\/api\/v1\/keys(\/.*)?$/, auth: "api_key" },
  { tag: "Usage", description: "Metered usage of a key.", paths: /^\/api\/v1\/usage(\/.*)?$/, auth: "api_key" },
  { tag: "Receipts", description: "Signed receipts, again by request id.", paths: /^\/api\/v1\/receipts(\/.*)?$/, auth: "api_key" },
  {
    tag: "Portal",
    description: "The portal's live network stream (Server-Sent Events); its pages are static files under /portal/.",
    paths: /^\/api\/v1\/network\/events$/,
    auth: "api_key",
  },
  { tag: "Admin", description: "Key and usage administration (ADMIN_SECRET).", paths: /^\/admin(\/.*)?$/, auth: "admin" },
  {
    tag: "A2A",
    description: "Agent2Agent: the public agent cards and discovery document, and the JSON-RPC endpoint.",
    paths: /^\/(\.well-known\/.*|api\/v1\/a2a(\/.*)?)$/,
    auth: "public",
    except: { "POST /api/v1/a2a": "api_key" },
  },
  {
    tag: "MCP",
    description: "Model Context Protocol: Streamable HTTP (/mcp, /mcp/messages, /messages) and legacy HTTP+SSE (/sse).",
    paths: /^\/(mcp(\/.*)?|sse|messages)$/,
    auth: "api_key",
  },
];

/** The family of an OpenAPI path, or undefined (which the test refuses). */
export const familyOf = (path: string): Family | undefined => FAMILIES.find((f) => f.paths.test(path));

/** The auth of one operation. */
export function authOf(method: string, path: string): Auth | undefined {
  const family = familyOf(path);
  return family?.except?.[`${method.toUpperCase()} ${path}`] ?? family?.auth;
}

/** A JSON-RPC 2.0 message, one or a batch, as MCP's transport validates it (the SDK's own zod schema). */
const McpMessages = z.union([JSONRPCMessageSchema, z.array(JSONRPCMessageSchema)]);

/** A2A JSON-RPC 2.0 request (the SDK's handler checks the method and its params). */
const A2ARequest = z.object({
  jsonrpc: z.literal("2.0"),
  id: z.union([z.string(), z.number(), z.null()]).optional(),
  method: z.string().describe("1.0: SendMessage, SendStreamingMessage, GetTask, CancelTask, ListTasks; 0.3: message/send, …"),
  params: z.record(z.string(), z.unknown()).optional(),
});

/** What a cancel takes: nothing, or an empty JSON object (routes/tasks.ts). */
const EmptyObject = z.object({}).strict();

export interface Body {
  schema: z.ZodType;
  required: boolean;
}

/**
 * Bodies of the routes that read them without `jsonBody` (their handlers parse them: JSON-RPC transports, the
 * optional empty cancel body), and `null` for the routes that take none. A POST/PUT/PATCH route in neither this
 * list nor validated by `jsonBody` fails the test: its body would be undocumented.
 */
export const BODIES: Record<string, Body | null> = {
  "POST /mcp": { schema: McpMessages, required: true },
  "POST /mcp/messages": { schema: McpMessages, required: true },
  "POST /messages": { schema: McpMessages, required: true },
  "POST /mcp/legacy/messages": { schema: McpMessages, required: true },
  "POST /api/v1/a2a": { schema: A2ARequest, required: true },
  "POST /api/v1/tasks/{sessionId}/{taskId}/cancel": { schema: EmptyObject, required: false },
  "POST /api/v1/miners/revoke": null,
  "POST /api/v1/keys/{id}/rotate": null,
  "POST /api/v1/keys/{id}/revoke": null,
  "POST /admin/keys/{id}/rotate": null,
  "POST /admin/keys/{id}/revoke": null,
};
