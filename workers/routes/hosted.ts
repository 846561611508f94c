import { type Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { ERROR_STATUS } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { answerResponse, completeOffchain, type OffchainAnswer, OffchainCompletionBody } from "../lib/offchain-completion.ts";
import { taskFacts, withReceipt } from "../lib/receipts.ts";
import { jsonBody, parseBody } from "../lib/request-validation.ts";
import { SESSION_ID } from "../lib/schemas.ts";
import { within } from "../lib/timeout.ts";
import { failureOf, type ThrownFailure } from "../middleware/errors.ts";

// The hosted entry: `POST /v1/completions` with the OpenAI-style `{model, prompt, max_tokens, temperature,
// top_p, stream}`, run as the router's v3 completion (lib/offchain-completion.ts, same request id) and answered
// in the gateway envelope `{request_id, status: "ok"|"failed", model, router_pool, data, error}`. A failure
// (a task `timeout` included) keeps its code and HTTP status; when the completion has not answered within
// HOSTED_TIMEOUT_MS (default 300 s, the documented proxy read timeout) the entry itself answers 504 `timeout`.
// `stream: true` answers exactly as /api/v3/completions does (SSE, or JSON when streaming is disabled). An answer
// carries `cost` and `receipt` next to `data` (lib/receipts.ts).

export const hosted = new Hono<AppEnv>();

const HostedBody = z.object({
  model: z.string().max(200).optional(),
  prompt: z.string().min(1, "prompt must not be empty"),
  max_tokens: z.number().int().min(1).max(4096).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  stream: z.boolean().default(false),
  /** Seconds; passed on to the task. */
  timeout: z.number().positive().max(300).optional(),
  session_id: z.string().regex(SESSION_ID).optional(),
});
type HostedBody = z.infer<typeof HostedBody>;

/** The v3 completion for a hosted body; a failure is settled here, so one that ends after the deadline is still logged. */
async function complete(c: Context<AppEnv>, b: HostedBody): Promise<{ answer: OffchainAnswer } | ThrownFailure> {
  try {
    const { model: _, ...rest } = b;
    const body = parseBody(OffchainCompletionBody, b.model ? { ...rest, model: b.model } : rest);
    return { answer: await completeOffchain(c.env, { owner: c.get("owner"), requestId: c.get("requestId") }, undefined, body) };
  } catch (err) {
    return failureOf(err, c);
  }
}

hosted.post("/completions", jsonBody(HostedBody), async (c) => {
  const b = c.req.valid("json");
  const envelope = (status: "ok" | "failed", data: unknown, error: ThrownFailure["error"] | null) => ({
    request_id: c.get("requestId"),
    status,
    model: b.model ?? c.env.DEFAULT_MODEL,
    router_pool: c.env.ROUTER_NAME,
    data,
    error,
  });
  const waitMs = Number(c.env.HOSTED_TIMEOUT_MS) || 300_000;
  const settled = await within(complete(c, b), waitMs);
  if (settled === "timeout") {
    return c.json(
      envelope("failed", null, { code: "timeout", message: `the router did not answer within ${waitMs} ms`, details: null }),
      504,
    );
  }
  if ("error" in settled) {
    return c.json(envelope("failed", null, settled.error), (ERROR_STATUS[settled.error.code] ?? settled.status) as ContentfulStatusCode);
  }
  const { answer } = settled;
  if (b.stream || answer.stream) return answerResponse(c, answer);
  const { cost, receipt } = await withReceipt(c, taskFacts("completion", answer.task));
  return c.json({ ...envelope("ok", answer.body, null), cost, receipt });
});
