import { Hono } from "hono";
import { nodePool } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { jsonBody, params } from "../lib/request-validation.ts";
import { CreateSessionBody, SessionParam } from "../lib/schemas.ts";
import { createSession } from "../lib/sessions.ts";
import { catalogQueue, sessionsSeenBy } from "../lib/tenancy.ts";

// Sessions as the caller may see them (lib/tenancy.ts): its own and the shared ones; another owner's read as unknown.

export const sessions = new Hono<AppEnv>();

sessions.get("/", async (c) => {
  const list = sessionsSeenBy(await nodePool(c.env).listSessions(), c.get("owner"));
  return c.json({ count: list.length, sessions: list });
});

sessions.post("/", jsonBody(CreateSessionBody), async (c) => {
  const config = await createSession(c.env, c.get("owner"), c.req.valid("json"));
  const summary = await nodePool(c.env).getSession(config.id);
  return c.json({ ...summary, config }, 201);
});

sessions.get("/:sessionId", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  const detail = await (await catalogQueue(c.env, sessionId))?.describe(c.get("owner"));
  const summary = detail ? await nodePool(c.env).getSession(sessionId) : null;
  if (!summary || !detail) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return c.json({ ...summary, config: detail.config, usage: detail.usage });
});
