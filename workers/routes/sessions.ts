import { Hono } from "hono";
import { nodePool, sessionQueue } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { jsonBody, params } from "../lib/request-validation.ts";
import { CreateSessionBody, SessionParam } from "../lib/schemas.ts";
import { createSession } from "../lib/sessions.ts";

export const sessions = new Hono<AppEnv>();

sessions.get("/", async (c) => {
  const list = await nodePool(c.env).listSessions();
  return c.json({ count: list.length, sessions: list });
});

sessions.post("/", jsonBody(CreateSessionBody), async (c) => {
  const config = await createSession(c.env, c.get("owner"), c.req.valid("json"));
  const summary = await nodePool(c.env).getSession(config.id);
  return c.json({ ...summary, config }, 201);
});

sessions.get("/:sessionId", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  const [summary, detail] = await Promise.all([nodePool(c.env).getSession(sessionId), sessionQueue(c.env, sessionId).describe()]);
  if (!summary || !detail) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return c.json({ ...summary, config: detail.config, usage: detail.usage });
});
