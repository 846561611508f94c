import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { answerResponse, completeOffchain, OffchainCompletionBody } from "../lib/offchain-completion.ts";
import { jsonBody } from "../lib/request-validation.ts";

// POST /api/v2/completions[/:sessionId] and /api/v3/completions[/:sessionId]: completions with off-chain and
// private payloads (the policy is in lib/offchain-completion.ts, shared with the hosted entry).

export const offchainCompletions = new Hono<AppEnv>();

offchainCompletions.post("/:sessionId?", jsonBody(OffchainCompletionBody), async (c) => {
  const who = { owner: c.get("owner"), requestId: c.get("requestId") };
  return answerResponse(c, await completeOffchain(c.env, who, c.req.param("sessionId"), c.req.valid("json")));
});
