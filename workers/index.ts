import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import type { AppEnv } from "./env.ts";
import { ApiError } from "./lib/api-error.ts";
import { apiKeyAuth } from "./middleware/auth.ts";
import { notFound, onError } from "./middleware/errors.ts";
import { completions } from "./routes/completions.ts";
import { delegate } from "./routes/delegate.ts";
import { factcheck } from "./routes/factcheck.ts";
import { hostedEntry } from "./routes/hosted.ts";
import { validate } from "./routes/validate.ts";
import { completionsV2 } from "./routes/completions-v2.ts";
import { offchain } from "./routes/offchain.ts";
import { payloadKeys } from "./routes/payload-keys.ts";
import { payloadMax } from "./lib/payload-store.ts";
import { meta, publicMeta } from "./routes/meta.ts";
import { miners } from "./routes/miners.ts";
import { sessions } from "./routes/sessions.ts";
import { tasks } from "./routes/tasks.ts";

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

const v1 = new Hono<AppEnv>();
v1.route("/", publicMeta);
// Miner routes authenticate by wallet signature and miner token, not API key.
v1.route("/", miners);
// Payload keys: session owners (API key) and allowlisted miners (miner token).
v1.route("/auth", payloadKeys);
v1.use(apiKeyAuth);
v1.route("/", meta);
v1.route("/sessions", sessions);
v1.route("/tasks", tasks);
v1.route("/completions", completions);

app.route("/api/v1", v1);
// Delegate / validate (v1–v3) and factcheck (v1): full paths, each route checks the API key itself.
app.route("/api", delegate);
app.route("/api", validate);
app.route("/api", factcheck);
// The hosted entry (POST /v1/completions): forwards to /api/v3/completions in-process, gateway envelope.
app.route("/", hostedEntry((req, env, ctx) => app.fetch(req, env, ctx)));

// v2/v3 completions: off-chain and private payloads (workers/routes/completions-v2.ts).
for (const version of ["v2", "v3"]) {
  const v = new Hono<AppEnv>();
  v.route("/completions", completionsV2);
  app.route(`/api/${version}`, v);
}
// Off-chain objects: miner writes and fetches (miner token), owner reads (API key).
app.route("/api/v3/offchain", offchain);

export default app;
