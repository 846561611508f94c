import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import type { AppEnv } from "./env.ts";
import { ApiError } from "./lib/api-error.ts";
import { payloadMax } from "./lib/payload-store.ts";
import { apiKeyAuth } from "./middleware/auth.ts";
import { notFound, onError } from "./middleware/errors.ts";
import { completions } from "./routes/completions.ts";
import { offchainCompletions } from "./routes/completions-offchain.ts";
import { delegate } from "./routes/delegate.ts";
import { factcheck } from "./routes/factcheck.ts";
import { hosted } from "./routes/hosted.ts";
import { meta, publicMeta } from "./routes/meta.ts";
import { miners } from "./routes/miners.ts";
import { offchain } from "./routes/offchain.ts";
import { payloadKeys } from "./routes/payload-keys.ts";
import { sessions } from "./routes/sessions.ts";
import { tasks } from "./routes/tasks.ts";
import { validate } from "./routes/validate.ts";

export { NodePool } from "../durable-objects/node-pool.ts";
export { Oracle } from "../durable-objects/oracle.ts";
export { SessionQueue } from "../durable-objects/session-queue.ts";

const app = new Hono<AppEnv>();

app.use(requestId({ headerName: "X-Request-ID" }));
// v2/v3 (off-chain payloads) take bodies up to PAYLOAD_MAX_BYTES (default 8 MiB); everything else 1 MiB.
const largeBodies = /^\/api\/v[23]\//;
const v1Limit = bodyLimit({
  maxSize: 1024 * 1024,
  onError: () => {
    throw new ApiError("invalid_request", "request body exceeds 1 MiB");
  },
});
app.use((c, next) => {
  if (!largeBodies.test(c.req.path)) return v1Limit(c, next);
  const max = payloadMax(c.env) + 64 * 1024;
  return bodyLimit({
    maxSize: max,
    onError: () => {
      throw new ApiError("invalid_request", `request body exceeds ${max} bytes`);
    },
  })(c, next);
});
app.onError(onError);
app.notFound(notFound);

// Auth is mounted here and only here. Routes with credentials of their own come first: a request they answer
// never reaches the API-key check below (Hono runs handlers in the order they were added).
app.route("/api/v1", publicMeta); // /ping, /about: public
app.route("/api/v1", miners); // wallet signature, then the miner token on the WebSockets
app.route("/api/v1/auth", payloadKeys); // API key or miner token, resolved per route (lib/credentials.ts)
app.route("/api/v3/offchain", offchain); // the same

// Every other path under /api and /v1 needs an API key.
app.use("/api/*", apiKeyAuth);
app.use("/v1/*", apiKeyAuth);

app.route("/api/v1", meta);
app.route("/api/v1/sessions", sessions);
app.route("/api/v1/tasks", tasks);
app.route("/api/v1/completions", completions);
// v2/v3 completions: off-chain and private payloads.
app.route("/api/v2/completions", offchainCompletions);
app.route("/api/v3/completions", offchainCompletions);
// Delegate / validate (v1–v3) and factcheck (v1) carry their versioned paths themselves.
app.route("/api", delegate);
app.route("/api", validate);
app.route("/api", factcheck);
// The hosted entry (POST /v1/completions): the v3 completion in the gateway envelope.
app.route("/v1", hosted);

export default app;
