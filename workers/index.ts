import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import type { AppEnv } from "./env.ts";
import { ApiError } from "./lib/api-error.ts";
import { apiKeyAuth } from "./middleware/auth.ts";
import { notFound, onError } from "./middleware/errors.ts";
import { completions } from "./routes/completions.ts";
import { meta, publicMeta } from "./routes/meta.ts";
import { miners } from "./routes/miners.ts";
import { sessions } from "./routes/sessions.ts";
import { tasks } from "./routes/tasks.ts";

export { NodePool } from "../durable-objects/node-pool.ts";
export { Oracle } from "../durable-objects/oracle.ts";
export { SessionQueue } from "../durable-objects/session-queue.ts";

const app = new Hono<AppEnv>();

app.use(requestId({ headerName: "X-Request-ID" }));
app.use(
  bodyLimit({
    maxSize: 1024 * 1024,
    onError: () => {
      throw new ApiError("invalid_request", "request body exceeds 1 MiB");
    },
  }),
);
app.onError(onError);
app.notFound(notFound);

const v1 = new Hono<AppEnv>();
v1.route("/", publicMeta);
// Miner routes authenticate by wallet signature and miner token, not API key.
v1.route("/", miners);
v1.use(apiKeyAuth);
v1.route("/", meta);
v1.route("/sessions", sessions);
v1.route("/tasks", tasks);
v1.route("/completions", completions);

app.route("/api/v1", v1);

export default app;
