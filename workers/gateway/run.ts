import type { Context } from "hono";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import type { GenerationConstraint } from "../../shared/generation.ts";
import type { TaskView } from "../../shared/views.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { receiptHeaders, taskFacts, withReceipt } from "../lib/receipts.ts";
import { submitError, submitTask, type Target } from "../lib/submit.ts";
import { type ModelEntry, type ModelKind, modelAllowed, resolveModel, sessionFor } from "./model-map.ts";
import { type AnswerMeta, answerBody, type Kind } from "./responses.ts";
import { streamAnswer } from "./stream.ts";

// One OpenAI completion or chat request as a network task: the model map picks the network model and session,
// the router's own submit path runs it (lib/submit.ts: the SessionQueue, its miners, consensus, deposit), and
// the answer is built in OpenAI's shape, with its cost and signed receipt (which also report it for metering).

/** Completion tokens when the request names no limit: OpenAI's 16 for /completions; 128 (the REST default) for chat. */
export const DEFAULT_MAX_TOKENS: Record<Kind, number> = { text: 16, chat: 128 };

/** Which kinds of model an endpoint serves. */
const SERVES: Record<Kind | "embedding" | "any", ModelKind[]> = {
  chat: ["chat"],
  text: ["chat", "completion"],
  embedding: ["embedding"],
  any: ["chat", "completion", "embedding"],
};

/** The map entry for a request's `model` that the calling key may use; else 404 model_not_found (as OpenAI answers). */
export function modelFor(c: Context<AppEnv>, name: string, endpoint: keyof typeof SERVES): ModelEntry {
  const entry = resolveModel(c.env, name);
  if (!entry || !modelAllowed(entry, c.get("allowedModels"))) {
    throw new ApiError("not_found", `the model ${name.slice(0, 200)} does not exist or you do not have access to it`, [
      { path: "model", message: "model_not_found" },
    ]);
  }
  if (!SERVES[endpoint].includes(entry.kind)) {
    const use = entry.kind === "embedding" ? "/embeddings" : "/completions or /chat/completions";
    throw new ApiError("invalid_request", `${name} is a ${entry.kind} model: use ${use}`, [
      { path: "model", message: `a ${entry.kind} model` },
    ]);
  }
  return entry;
}

/** The session an entry's task goes to: configured (created on first use, with the entry's model), never the caller's. */
export function targetFor(env: Env, entry: ModelEntry): Target {
  const id = sessionFor(env, entry);
  if (!id) throw new ApiError("configuration_error", `no session serves ${entry.id}: configure DEFAULT_SESSION_ID or the model's sessions`);
  return { session_id: id, configured: true, defaults: { model: entry.network_model, redundancy: entry.redundancy } };
}

/** The decoding fields chat and completions bodies share (gateway/schemas.ts). */
interface Decoding {
  temperature?: number;
  top_p?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  seed?: number;
  stop?: string[];
  stream?: boolean;
  user?: string;
  safety_identifier?: string;
}

/** The SessionQueue request: the prompt travels raw (already rendered), decoding as asked, greedy by default. */
export function taskRequest(
  c: Context<AppEnv>,
  entry: ModelEntry,
  prompt: string,
  b: Decoding,
  maxTokens: number,
  constraint?: GenerationConstraint,
): SubmitRequest {
  return {
    input: { prompt, prompt_type: 1 },
    params: {
      max_tokens: maxTokens,
      // 0 decodes greedily: replicas agree exactly (OpenAI's own default is 1; say temperature to sample).
      temperature: b.temperature ?? 0,
      top_p: b.top_p ?? 1,
      top_k: 0,
      presence_penalty: b.presence_penalty ?? 0,
      frequency_penalty: b.frequency_penalty ?? 0,
      stop: b.stop ?? [],
      seed: b.seed,
      ...(constraint ? { constraint } : {}),
    },
    stream: b.stream ?? false,
    client_reference: b.user ?? b.safety_identifier,
    model: entry.network_model,
    max_miners: entry.redundancy,
    owner: c.get("owner"),
  };
}

/**
 * Prices, signs and stores the receipt of a finished task (lib/receipts.ts), which also reports the usage, cost
 * and task to the usage meter; the answer carries the cost and the receipt.
 */
export function receiptOf(c: Context<AppEnv>, kind: Kind, entry: ModelEntry, task: TaskView, headers = true) {
  const facts = { ...taskFacts(kind === "chat" ? "chat" : "completion", task, entry.id), price: entry.price };
  return withReceipt(c, facts, { headers });
}

/** Runs one request and answers it: JSON, or SSE with `stream`. `model` in the answer is the entry's public id. */
export async function runCompletion(c: Context<AppEnv>, kind: Kind, entry: ModelEntry, req: SubmitRequest, includeUsage: boolean) {
  const target = targetFor(c.env, entry);
  const outcome = await submitTask(c.env, target, req, `gateway: ${entry.id}`);
  if (!outcome.ok) throw submitError(outcome);
  if (!outcome.stream) {
    const { cost, receipt } = await receiptOf(c, kind, entry, outcome.task);
    const meta: AnswerMeta = {
      kind,
      model: entry.id,
      sessionId: target.session_id,
      taskId: outcome.task.task_id,
      created: outcome.task.created_at,
    };
    return c.json({ ...answerBody(meta, outcome.task), cost, receipt });
  }
  receiptHeaders(c);
  const meta: AnswerMeta = { kind, model: entry.id, sessionId: target.session_id, taskId: outcome.task_id, created: outcome.created_at };
  return streamAnswer(c, meta, outcome.events, { includeUsage, onDone: (task) => receiptOf(c, kind, entry, task, false) });
}
