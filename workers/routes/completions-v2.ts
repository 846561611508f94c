import { Hono, type Context } from "hono";
import { z } from "zod";
import type { SubmitOutcome, SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import type { PromptSpec } from "../../shared/generation.ts";
import { RESULT_POLICIES, parseUrn, type PayloadDescriptor } from "../../shared/payloads.ts";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { completionRequest, resolveSession } from "../lib/completion-request.ts";
import { streamCompletion } from "../lib/completion-stream.ts";
import { completionResponse } from "../lib/openai.ts";
import { inlineLimit, payloadMax, promptBytes, readResultText, storePrompt } from "../lib/payload-store.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { ensureDefaultSession } from "../lib/sessions.ts";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import { jsonBody } from "../lib/validate.ts";
import { apiKeyAuth } from "../middleware/auth.ts";

// POST /api/v2/completions[/:sessionId] and /api/v3/completions[/:sessionId]: v1's fields plus a privacy
// and size policy. The prompt (as PromptSpec JSON) goes to R2 and the task carries only its URN when it is
// larger than INLINE_PAYLOAD_LIMIT, when `payload_policy` is `offchain`, or when the task is private
// (`private: true`, or session metadata `private: true`); a private prompt is sealed under its task key first.
// Results: `result_policy` `inline` (the default unless private) answers with the text; `offchain` answers with
// the result URN (GET /api/v3/offchain/result/:urn). A private task's miners always write their result
// encrypted to R2, never inline; with `inline` the router decrypts it for the owner's response. A private
// task does not stream: `stream: true` gets the whole answer as JSON with `streaming_disabled: true`.

export const completionsV2 = new Hono<AppEnv>();
completionsV2.use(apiKeyAuth);

export const CompletionV2Body = CompletionBody.extend({
  prompt: z.string().min(1, "prompt must not be empty").max(64 * 1024 * 1024),
  /** Encrypt the prompt and the result (R2 holds ciphertext only); disables token streaming. */
  private: z.boolean().optional(),
  /** Where the client wants the result: inline text, or a URN to fetch. */
  result_policy: z.enum(RESULT_POLICIES).optional(),
  /** `auto` (default): off-chain when larger than the inline limit or private; `offchain` always; `inline` never. */
  payload_policy: z.enum(["auto", "inline", "offchain"]).default("auto"),
});
export type CompletionV2Body = z.infer<typeof CompletionV2Body>;

interface Plan {
  offchain: boolean;
  private: boolean;
  resultPolicy: "inline" | "offchain";
  descriptor: PayloadDescriptor | undefined;
  taskId: number | undefined;
  promptUrn: string | null;
}

async function reserve(env: Env, sessionId: string, owner: string) {
  let r = await sessionQueue(env, sessionId).reserveTaskId(owner);
  if (!r.ok && r.error.code === "session_not_found" && sessionId === env.DEFAULT_SESSION_ID) {
    await ensureDefaultSession(env, sessionId);
    r = await sessionQueue(env, sessionId).reserveTaskId(owner);
  }
  if (!r.ok) throw ApiError.from(r.error);
  return r;
}

/** Decides where the prompt and result go, and stores the prompt when it goes off-chain. */
async function plan(env: Env, sessionId: string, owner: string, body: CompletionV2Body, spec: PromptSpec, plain: Uint8Array): Promise<Plan> {
  const limit = inlineLimit(env);
  // The reservation checks the session and its owner, tells whether the session is private (metadata
  // `private: true`), and gives the id that names the task's payload and key.
  const reservation = await reserve(env, sessionId, owner);
  const sessionPrivate = reservation.config.metadata?.private === true;
  if (sessionPrivate && body.private === false) {
    throw new ApiError("invalid_request", `session ${sessionId} is private`, [{ path: "private", message: "this session only takes private tasks" }]);
  }
  const isPrivate = body.private ?? sessionPrivate;
  if (isPrivate && body.payload_policy === "inline") {
    throw new ApiError("invalid_request", "a private prompt never travels inline", [{ path: "payload_policy", message: "use auto or offchain" }]);
  }
  if (body.payload_policy === "inline" && plain.length > limit) {
    throw new ApiError("invalid_request", `prompt is ${plain.length} bytes; the inline limit is ${limit}`, [{ path: "payload_policy", message: "too large for inline" }]);
  }
  if (isPrivate && reservation.config.owner === "*") {
    throw new ApiError("invalid_request", `session ${sessionId} is shared by every API key; private tasks need a session of your own`, [
      { path: "private", message: "not on a shared session" },
    ]);
  }
  const offchain = isPrivate || body.payload_policy === "offchain" || (body.payload_policy === "auto" && plain.length > limit);
  const resultPolicy = body.result_policy ?? (isPrivate ? "offchain" : "inline");
  if (!offchain && !isPrivate && resultPolicy === "inline") {
    return { offchain: false, private: false, resultPolicy, descriptor: undefined, taskId: reservation.task_id, promptUrn: null };
  }
  const taskId = reservation.task_id;
  let descriptor: PayloadDescriptor = { encrypted: isPrivate, result_policy: isPrivate ? "offchain" : resultPolicy, inline_limit: limit };
  let promptUrn: string | null = null;
  if (offchain) {
    const stored = await storePrompt(env, sessionId, String(taskId), plain, isPrivate);
    promptUrn = stored.urn;
    descriptor = { ...descriptor, prompt_urn: stored.urn, prompt_bytes: plain.length, ...(stored.key_version ? { key_version: stored.key_version } : {}) };
  }
  return { offchain, private: isPrivate, resultPolicy, descriptor, taskId, promptUrn };
}

/** The chosen replica's result URN, if its result went off-chain. */
function resultUrnOf(task: TaskView): string | null {
  const miner = task.result?.miner;
  return task.replicas.find((r) => r.miner === miner)?.result_urn ?? null;
}

async function respond(c: Context<AppEnv>, task: TaskView, p: Plan, extra: Record<string, unknown> = {}) {
  const base = completionResponse(task, c.get("requestId"));
  const urn = resultUrnOf(task);
  let text = base.choices[0].text;
  if (urn && p.resultPolicy === "inline") text = await readResultText(c.env, urn);
  if (p.resultPolicy === "offchain") text = urn ? "" : text;
  return c.json({
    ...base,
    choices: [{ ...base.choices[0], text }],
    offchain: {
      prompt_urn: p.promptUrn,
      result_urn: urn,
      encrypted: p.private,
      key_version: p.descriptor?.key_version ?? null,
      result_policy: p.resultPolicy,
    },
    ...extra,
  });
}

completionsV2.post("/:sessionId?", jsonBody(CompletionV2Body), async (c) => {
  const body = c.req.valid("json");
  const env = c.env;
  const sessionId = resolveSession(env, c.req.param("sessionId"), body.session_id);
  const spec: PromptSpec = { prompt: body.prompt, prompt_type: body.prompt_type, ...(body.prompt_template !== undefined ? { prompt_template: body.prompt_template } : {}) };
  const plain = promptBytes(spec);
  if (plain.length > payloadMax(env)) {
    throw new ApiError("invalid_request", `prompt is ${plain.length} bytes; the limit is ${payloadMax(env)}`, [{ path: "prompt", message: "too large" }]);
  }

  let p = await plan(env, sessionId, c.get("owner"), body, spec, plain);
  const streamTokens = body.stream && !p.private;
  const request = (): SubmitRequest => ({
    ...completionRequest(body, c.get("owner")),
    input: p.offchain ? { prompt: "", prompt_type: body.prompt_type } : spec,
    stream: streamTokens,
    ...(p.descriptor ? { payload: p.descriptor } : {}),
    ...(p.taskId !== undefined ? { task_id: p.taskId } : {}),
  });
  let outcome: SubmitOutcome = await sessionQueue(env, sessionId).submit(request());
  if (!outcome.ok && outcome.error.code === "conflict") {
    // The queue was evicted between reservation and submit and forgot the id: drop what was stored under it
    // (the id may be reused, and with it the task key) and store under a fresh one.
    const orphan = p.promptUrn ? parseUrn(p.promptUrn) : null;
    if (orphan) await env.PAYLOADS.delete(orphan.key);
    p = await plan(env, sessionId, c.get("owner"), body, spec, plain);
    outcome = await sessionQueue(env, sessionId).submit(request());
  }
  if (!outcome.ok) {
    // Refused before a task existed (deposit, no miner…): what was stored for it goes too.
    const orphan = !outcome.task && p.promptUrn ? parseUrn(p.promptUrn) : null;
    if (orphan) await env.PAYLOADS.delete(orphan.key);
    const { code, message, details } = outcome.error;
    throw new ApiError(code, message, details ?? (outcome.task ? { task_id: outcome.task.task_id, status: outcome.task.status } : null));
  }
  if (!outcome.stream) {
    if (body.stream) c.header("X-Streaming-Disabled", "encrypted-payload");
    return respond(c, outcome.task, p, body.stream ? { streaming_disabled: true, streaming_disabled_reason: "encrypted payloads are not streamed" } : {});
  }

  const meta = { sessionId, taskId: outcome.task_id, model: outcome.model, created: outcome.created_at };
  return streamCompletion(c, meta, outcome.events, (task) => ({
    offchain: { prompt_urn: p.promptUrn, result_urn: resultUrnOf(task), encrypted: false, result_policy: p.resultPolicy },
  }));
});
