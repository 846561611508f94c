import { Hono } from "hono";
import { a2a, a2aPublic } from "./a2a/routes.ts";
import type { AppEnv } from "./env.ts";
import { openaiErrors } from "./gateway/errors.ts";
import { gateway } from "./gateway/routes.ts";
import { legacyMcp } from "./mcp/legacy.ts";
import { mcpAuthChallenge, mcpEndpoint } from "./mcp/routes.ts";
import { apiKeyAuth, trialCredential } from "./middleware/auth.ts";
import { bodyLimits } from "./middleware/body-limits.ts";
import { configGuard } from "./middleware/config-guard.ts";
import { notFound, onError } from "./middleware/errors.ts";
import { rateLimit } from "./middleware/rate-limit.ts";
import { requestIdentity } from "./middleware/request-id.ts";
import { requestLog } from "./middleware/request-log.ts";
import { portalFeed } from "./portal/routes.ts";
import { admin } from "./routes/admin.ts";
import { chain } from "./routes/chain.ts";
import { completions } from "./routes/completions.ts";
import { offchainCompletions } from "./routes/completions-offchain.ts";
import { sealedCompletions, sealedReservations } from "./routes/completions-sealed.ts";
import { delegate } from "./routes/delegate.ts";
import { embeddings } from "./routes/embeddings.ts";
import { factcheck } from "./routes/factcheck.ts";
import { hosted } from "./routes/hosted.ts";
import { keys } from "./routes/keys.ts";
import { meta, publicMeta } from "./routes/meta.ts";
import { miners } from "./routes/miners.ts";
import { offchain } from "./routes/offchain.ts";
import { openApi } from "./routes/openapi.ts";
import { payloadKeys } from "./routes/payload-keys.ts";
import { receipts } from "./routes/receipts.ts";
import { sessions } from "./routes/sessions.ts";
import { tasks } from "./routes/tasks.ts";
import { trial } from "./routes/trial.ts";
import { usage } from "./routes/usage.ts";
import { validate } from "./routes/validate.ts";
import { x402 } from "./routes/x402.ts";
import { gatewayPayment } from "./x402/gateway.ts";

export { A2ATaskStore } from "../durable-objects/a2a-task-store.ts";
export { KeyRegistry } from "../durable-objects/key-registry.ts";
export { McpSession } from "../durable-objects/mcp-session.ts";
export { NodePool } from "../durable-objects/node-pool.ts";
export { Oracle } from "../durable-objects/oracle.ts";
export { Payments } from "../durable-objects/payments.ts";
export { SessionQueue } from "../durable-objects/session-queue.ts";
export { TrialQuota } from "../durable-objects/trial-quota.ts";
export { UsageMeter } from "../durable-objects/usage-meter.ts";

const app = new Hono<AppEnv>();

// In order: the router's own request id; refuse to serve on unfit secrets; abuse limits; body limits per route.
app.use(requestIdentity);
// A trial route's in-process request, recognised before body limits replace c.req.raw (routes/trial.ts).
app.use(trialCredential);
// One JSON log line per request, and its usage and budget settled, once its answer has been sent.
app.use(requestLog);
// The OpenAI-compatible API answers every error in OpenAI's shape (workers/gateway/errors.ts): outermost there.
app.use("/openai/*", openaiErrors);
app.use(configGuard);
app.use(rateLimit);
app.use(bodyLimits);
app.onError(onError);
// MCP and A2A call the REST routes in-process (lib/rest-call.ts): the app hands them its own fetch.
app.use((c, next) => {
  c.set("restFetch", (req) => app.fetch(req, c.env, c.executionCtx));
  return next();
});
app.notFound(notFound);

// Auth is mounted here and only here. Routes with credentials of their own come first: a request they answer
// never reaches the API-key check below (Hono runs handlers in the order they were added).
app.route("/api/v1", publicMeta); // /ping, /about: public
app.route("/", openApi(app)); // GET /openapi.json and /docs: public, generated from every route of this app
app.route("/api/v1", miners); // wallet signature, then the miner token on the WebSockets
app.route("/api/v1/auth", payloadKeys); // API key or miner token, resolved per route (lib/credentials.ts)
app.route("/api/v3/offchain", offchain); // the same
app.route("/", a2aPublic); // A2A agent cards and /api/v1/a2a/discovery: public discovery documents
app.route("/admin", admin); // the key admin API: ADMIN_SECRET (middleware/admin-auth.ts)
app.route("/api/v1", chain); // public: the chain's token, staking contract and rules; the development faucet
app.route("/api", trial); // no key: a quota per client IP, then the REST route in-process as owner `trial`
app.route("/api", x402); // no key: an x402 payment per request, then the REST route in-process as owner `x402`

// Every other path under /api and /v1 needs an API key.
app.use("/api/*", apiKeyAuth);
app.use("/v1/*", apiKeyAuth);
app.use("/openai/*", gatewayPayment); // no key and x402 on: paid per request (workers/x402/gateway.ts)
app.use("/openai/*", apiKeyAuth);
// MCP (workers/mcp/): the same API keys. Legacy HTTP+SSE: GET /sse or /mcp/legacy, POST /mcp/legacy/messages or /messages.
// A 401 on an MCP path carries `WWW-Authenticate: Bearer` (mounted before the check so it sees the answer).
for (const path of ["/mcp", "/mcp/*", "/sse", "/messages"]) app.use(path, mcpAuthChallenge);
app.use("/mcp", apiKeyAuth);
app.use("/mcp/*", apiKeyAuth);
app.use("/sse", apiKeyAuth);
app.use("/messages", apiKeyAuth);
app.route("/", legacyMcp);
// Streamable HTTP (workers/mcp/routes.ts); `/messages` without `?sessionId` (legacy's) is Cortensor's alias.
app.route("/mcp", mcpEndpoint);
app.route("/mcp/messages", mcpEndpoint);
app.route("/messages", mcpEndpoint);

app.route("/api/v1", meta);
app.route("/api/v1/network", portalFeed); // the portal's live network stream (SSE; pages: static /portal/)
app.route("/api/v1/sessions", sessions);
app.route("/api/v1/sessions", sealedReservations); // /:sid/reservations: a task id and its key, to seal a prompt
app.route("/api/v1/tasks", tasks);
app.route("/api/v1/keys", keys); // an owner's own keys (self-service)
app.route("/api/v1/usage", usage); // an owner's own usage
app.route("/api/v1/a2a", a2a); // A2A JSON-RPC, both protocol versions (workers/a2a/)
app.route("/api/v1/completions", completions);
app.route("/api/v1/embeddings", embeddings); // texts embedded by the session's miners, agreed by cosine distance
app.route("/api/v1/receipts", receipts); // a receipt again by request id, its owner's only (routes/receipts.ts)
// v2/v3 completions: off-chain and private payloads.
app.route("/api/v2/completions", offchainCompletions);
app.route("/api/v3/completions", sealedCompletions); // a private prompt sealed on the client: /:sid/sealed
app.route("/api/v3/completions", offchainCompletions);
// Delegate / validate (v1–v3) and factcheck (v1) carry their versioned paths themselves.
app.route("/api", delegate);
app.route("/api", validate);
app.route("/api", factcheck);
// The hosted entry (POST /v1/completions): the v3 completion in the gateway envelope.
app.route("/v1", hosted);
// The OpenAI-compatible API (workers/gateway/): models, chat/completions, completions, embeddings.
app.route("/openai/v1/usage", usage); // the same usage report, under the OpenAI base URL
app.route("/openai/v1", gateway);

export default app;
