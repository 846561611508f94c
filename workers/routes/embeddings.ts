import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { EmbeddingBody } from "../lib/embedding-schemas.ts";
import { embedOnNetwork } from "../lib/embeddings.ts";
import { taskFacts, withReceipt } from "../lib/receipts.ts";
import { jsonBody } from "../lib/request-validation.ts";

// POST /api/v1/embeddings[/:sessionId]: texts embedded by k miners of the session, answered with the vectors a
// quorum agrees on (lib/embeddings.ts), their cost and a signed receipt (lib/receipts.ts). A managed key's
// allowed models, rate limit and budget are applied before (lib/key-gate.ts: a work route).

export const embeddings = new Hono<AppEnv>();

embeddings.post("/:sessionId?", jsonBody(EmbeddingBody), async (c) => {
  const body = c.req.valid("json");
  const answer = await embedOnNetwork(c.env, c.get("owner"), body, c.req.param("sessionId"));
  const { cost, receipt } = await withReceipt(c, taskFacts("embedding", answer.task));
  return c.json({ ...answer, request_id: c.get("requestId"), cost, receipt });
});
