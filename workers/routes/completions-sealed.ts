import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { answerResponse } from "../lib/offchain-completion.ts";
import { jsonBody, params } from "../lib/request-validation.ts";
import { SessionParam } from "../lib/schemas.ts";
import { completeSealed, ReserveBody, reserveSealed, SealedCompletionBody } from "../lib/sealed-completion.ts";

// Private prompts sealed on the client (API key; the session's owner only):
//   POST /api/v1/sessions/:sessionId/reservations {}       a task id, its token and that task's key (not a work
//                                                          request: no usage row, no budget, no model named)
//   POST /api/v3/completions/:sessionId/sealed {task_id, reservation, envelope, …params}
//                                                          the sealed prompt stored, the task run; the answer
//                                                          names the sealed result's URN
// The router never receives the prompt's plaintext here (lib/sealed-completion.ts).

export const sealedReservations = new Hono<AppEnv>();
export const sealedCompletions = new Hono<AppEnv>();

sealedReservations.post("/:sessionId/reservations", params(SessionParam), jsonBody(ReserveBody), async (c) => {
  return c.json(await reserveSealed(c.env, c.get("owner"), c.req.valid("param").sessionId), 201);
});

sealedCompletions.post("/:sessionId/sealed", params(SessionParam), jsonBody(SealedCompletionBody), async (c) => {
  const who = { owner: c.get("owner"), requestId: c.get("requestId") };
  return answerResponse(c, await completeSealed(c.env, who, c.req.valid("param").sessionId, c.req.valid("json")));
});
