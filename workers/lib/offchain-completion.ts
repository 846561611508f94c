import type { Context } from "hono";
import { z } from "zod";
import { promptReadBytes } from "../../durable-objects/session-queue/context.ts";
import type { SubmitOutcome, SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import type { PromptSpec } from "../../shared/generation.ts";
import { type PayloadDescriptor, parseUrn, RESULT_POLICIES } from "../../shared/payloads.ts";
import type { SessionConfig, TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "./api-error.ts";
import { completionRequest, resolveSession } from "./completion-request.ts";
import { streamCompletion } from "./completion-stream.ts";
import { completionResponse } from "./openai.ts";
import { inlineLimit, payloadMax, promptBytes, readResultText, storePrompt } from "./payload-store.ts";
import { receiptHeaders, taskFacts, withReceipt } from "./receipts.ts";
import { CompletionBody } from "./schemas.ts";
import { reserveTaskId, submitError, submitTask, type Target } from "./submit.ts";

// The v2/v3 completion (POST /api/v2|v3/completions[/:sessionId], and the hosted entry POST /v1/completions):
// v1's fields plus a privacy and size policy. The prompt (as PromptSpec JSON) goes to R2 and the task carries
// only its URN when it is larger than INLINE_PAYLOAD_LIMIT, when `payload_policy` is `offchain`, or when the
// task is private (`private: true`, or session metadata `private: true`); a private prompt is sealed under its
// task key first. Results: `result_policy` `inline` (the default unless private) answers with the text;
// `offchain` answers with the result URN (GET /api/v3/offchain/result/:urn). A private task's miners always
// write their result encrypted to R2, never inline; with `inline` the router decrypts it for the owner's
// response. A private task does not stream: `stream: true` gets the whole answer as JSON with
// `streaming_disabled: true`.

export const OffchainCompletionBody = CompletionBody.extend({
  prompt: z
    .string()
    .min(1, "prompt must not be empty")
    .max(64 * 1024 * 1024),
  /** Encrypt the prompt and the result (R2 holds ciphertext only); disables token streaming. */
  private: z.boolean().optional(),
  /** Where the client wants the result: inline text, or a URN to fetch. */
  result_policy: z.enum(RESULT_POLICIES).optional(),
  /** `auto` (default): off-chain when larger than the inline limit or private; `offchain` always; `inline` never. */
  payload_policy: z.enum(["auto", "inline", "offchain"]).default("auto"),
});
export type OffchainCompletionBody = z.infer<typeof OffchainCompletionBody>;

interface Plan {
  offchain: boolean;
  private: boolean;
  resultPolicy: "inline" | "offchain";
  descriptor: PayloadDescriptor | undefined;
  taskId: number | undefined;
  promptUrn: string | null;
}

/**
 * Decides where the prompt and result go, and stores the prompt when it goes off-chain. The reservation checks
 * the session and its owner, tells whether the session is private (metadata `private: true`), and gives the id
 * that names the task's payload and key; when the plan fails after it, the id is given back (the queue would
 * otherwise hold it in memory for nothing).
 */
async function plan(env: Env, target: Target, owner: string, body: OffchainCompletionBody, plain: Uint8Array): Promise<Plan> {
  const reservation = await reserveTaskId(env, target, owner);
  try {
    return await planReserved(env, target, body, plain, reservation);
  } catch (err) {
    await sessionQueue(env, target.session_id)
      .releaseTaskId(reservation.task_id)
      .catch(() => {}); // it expires in the queue anyway
    throw err;
  }
}

async function planReserved(
  env: Env,
  target: Target,
  body: OffchainCompletionBody,
  plain: Uint8Array,
  reservation: { task_id: number; config: SessionConfig },
): Promise<Plan> {
  const sessionId = target.session_id;
  const limit = inlineLimit(env);
  const sessionPrivate = reservation.config.metadata?.private === true;
  if (sessionPrivate && body.private === false) {
    throw new ApiError("invalid_request", `session ${sessionId} is private`, [
      { path: "private", message: "this session only takes private tasks" },
    ]);
  }
  const isPrivate = body.private ?? sessionPrivate;
  if (isPrivate && body.payload_policy === "inline") {
    throw new ApiError("invalid_request", "a private prompt never travels inline", [
      { path: "payload_policy", message: "use auto or offchain" },
    ]);
  }
  if (body.payload_policy === "inline" && plain.length > limit) {
    throw new ApiError("invalid_request", `prompt is ${plain.length} bytes; the inline limit is ${limit}`, [
      { path: "payload_policy", message: "too large for inline" },
    ]);
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
    descriptor = {
      ...descriptor,
      prompt_urn: stored.urn,
      prompt_bytes: plain.length,
      ...(stored.key_version ? { key_version: stored.key_version } : {}),
    };
  }
  return { offchain, private: isPrivate, resultPolicy, descriptor, taskId, promptUrn };
}

/** Drops what was stored under a reserved id that no task will use. */
async function dropPrompt(env: Env, p: Plan): Promise<void> {
  const orphan = p.promptUrn ? parseUrn(p.promptUrn) : null;
  if (orphan) await env.PAYLOADS.delete(orphan.key);
}

/** The chosen replica's result URN, if its result went off-chain. */
export function resultUrnOf(task: TaskView): string | null {
  const miner = task.result?.miner;
  return task.replicas.find((r) => r.miner === miner)?.result_urn ?? null;
}

async function resultBody(env: Env, task: TaskView, p: Plan, requestId: string): Promise<Record<string, unknown>> {
  const base = completionResponse(task, requestId);
  const urn = resultUrnOf(task);
  let text = base.choices[0].text;
  if (urn && p.resultPolicy === "inline") text = await readResultText(env, urn);
  if (p.resultPolicy === "offchain") text = urn ? "" : text;
  return {
    ...base,
    choices: [{ ...base.choices[0], text }],
    offchain: {
      prompt_urn: p.promptUrn,
      result_urn: urn,
      encrypted: p.private,
      key_version: p.descriptor?.key_version ?? null,
      result_policy: p.resultPolicy,
    },
  };
}

/** A completion's answer, before it is rendered as JSON or as an SSE stream. */
export type OffchainAnswer =
  | { stream: false; body: Record<string, unknown>; streamingDisabled: boolean; task: TaskView }
  | {
      stream: true;
      meta: { sessionId: string; taskId: string; model: string; created: number };
      events: ReadableStream<Uint8Array>;
      onDone: (task: TaskView) => Record<string, unknown>;
    };

/** Runs one v2/v3 completion for `owner`; refusals and failures are thrown as ApiError. */
export async function completeOffchain(
  env: Env,
  who: { owner: string; requestId: string },
  pathSessionId: string | undefined,
  body: OffchainCompletionBody,
): Promise<OffchainAnswer> {
  const target = resolveSession(env, pathSessionId, body.session_id);
  const spec: PromptSpec = {
    prompt: body.prompt,
    prompt_type: body.prompt_type,
    ...(body.prompt_template !== undefined ? { prompt_template: body.prompt_template } : {}),
  };
  const plain = promptBytes(spec);
  if (plain.length > payloadMax(env)) {
    throw new ApiError("invalid_request", `prompt is ${plain.length} bytes; the limit is ${payloadMax(env)}`, [
      { path: "prompt", message: "too large" },
    ]);
  }

  let p = await plan(env, target, who.owner, body, plain);
  const streamTokens = body.stream && !p.private;
  const request = (): SubmitRequest => ({
    ...completionRequest(body, who.owner),
    input: p.offchain ? { prompt: "", prompt_type: body.prompt_type } : spec,
    // The queue judges the context from what the model will read, which an off-chain task does not carry.
    ...(p.offchain ? { prompt_read_bytes: promptReadBytes(spec) } : {}),
    stream: streamTokens,
    ...(p.descriptor ? { payload: p.descriptor } : {}),
    ...(p.taskId !== undefined ? { task_id: p.taskId } : {}),
  });
  let outcome: SubmitOutcome = await submitTask(env, target, request());
  if (!outcome.ok && outcome.error.code === "conflict") {
    // The queue was evicted between reservation and submit and forgot the id: drop what was stored under it
    // (the id may be reused, and with it the task key) and store under a fresh one.
    await dropPrompt(env, p);
    p = await plan(env, target, who.owner, body, plain);
    outcome = await submitTask(env, target, request());
  }
  if (!outcome.ok) {
    // Refused before a task existed (deposit, no miner…): what was stored for it goes too.
    if (!outcome.task) await dropPrompt(env, p);
    throw submitError(outcome);
  }
  if (!outcome.stream) {
    const json = await resultBody(env, outcome.task, p, who.requestId);
    if (!body.stream) return { stream: false, body: json, streamingDisabled: false, task: outcome.task };
    return {
      stream: false,
      body: { ...json, streaming_disabled: true, streaming_disabled_reason: "encrypted payloads are not streamed" },
      streamingDisabled: true,
      task: outcome.task,
    };
  }
  const final = p;
  return {
    stream: true,
    meta: { sessionId: target.session_id, taskId: outcome.task_id, model: outcome.model, created: outcome.created_at },
    events: outcome.events,
    onDone: (task) => ({
      offchain: { prompt_urn: final.promptUrn, result_urn: resultUrnOf(task), encrypted: false, result_policy: final.resultPolicy },
    }),
  };
}

/**
 * Renders an answer as the v2/v3 route does: JSON (saying when streaming was disabled) or SSE, with its cost and
 * signed receipt (lib/receipts.ts; a stream's in its final chunk).
 */
export async function answerResponse(c: Context<AppEnv>, answer: OffchainAnswer): Promise<Response> {
  if (answer.stream) {
    receiptHeaders(c);
    const onDone = async (task: TaskView) => ({
      ...answer.onDone(task),
      ...(await withReceipt(c, taskFacts("completion", task), { headers: false })),
    });
    return streamCompletion(c, answer.meta, answer.events, onDone);
  }
  if (answer.streamingDisabled) c.header("X-Streaming-Disabled", "encrypted-payload");
  const { cost, receipt } = await withReceipt(c, taskFacts("completion", answer.task));
  return c.json({ ...answer.body, cost, receipt });
}
