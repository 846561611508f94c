import type { ModelContext } from "../../shared/api.ts";
import type { Failure } from "../../shared/errors.ts";
import { contextFor } from "../miner-credentials.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import { promptReadBytes } from "./prompt-bytes.ts";
import type { SubmitRequest } from "./rpc.ts";
import type { OpenTask } from "./task.ts";

// Whether a prompt can fit the session model's context, judged before any miner runs it. Miners declare their
// model's positions and, for byte-level BPE tokenizers without a normalizer, the byte length of the longest
// token: every token then stands for at most that many input bytes, so a prompt the model reads as B bytes
// takes at least ceil(B / max_token_bytes) tokens. The prompt's tokens (that lower bound) plus max_tokens must
// fit the positions of at least one connected miner; a miner that declared nothing may have room, so then the
// task goes ahead and the miners' own refusals decide (refusedByEveryone).

export { promptReadBytes } from "./prompt-bytes.ts";

/** The fewest tokens a prompt of `bytes` bytes can take (1: an empty prompt still reads a bos token). */
export function minPromptTokens(bytes: number, maxTokenBytes: number | undefined): number {
  return maxTokenBytes ? Math.max(1, Math.ceil(bytes / maxTokenBytes)) : 1;
}

/** The fewest tokens a task needs: its prompt's lower bound and its completion (a grammar decides its own length). */
export function taskNeeds(req: SubmitRequest, ctx: ModelContext): { prompt: number; completion: number; bytes: number } {
  const bytes = req.input.prompt === "" && req.prompt_read_bytes !== undefined ? req.prompt_read_bytes : promptReadBytes(req.input);
  return { prompt: minPromptTokens(bytes, ctx.max_token_bytes), completion: req.params.constraint ? 1 : req.params.max_tokens, bytes };
}

/**
 * 400 `context_length_exceeded` when the task fits none of the serving miners' contexts (null: a miner declared
 * none, which may fit anything, so nothing is refused early).
 */
export function contextFailure(req: SubmitRequest, model: string, contexts: readonly (ModelContext | null)[]): Failure | null {
  if (contexts.length === 0 || contexts.some((c) => c === null)) return null;
  let widest: { ctx: ModelContext; need: ReturnType<typeof taskNeeds> } | null = null;
  for (const ctx of contexts as ModelContext[]) {
    const need = taskNeeds(req, ctx);
    if (need.prompt + need.completion <= ctx.positions) return null;
    if (!widest || ctx.positions > widest.ctx.positions) widest = { ctx, need };
  }
  const { ctx, need } = widest!;
  return {
    code: "context_length_exceeded",
    message:
      `model ${model} reads at most ${ctx.positions} tokens; this prompt (${need.bytes} bytes) takes at least ${need.prompt} ` +
      `and max_tokens asks for ${need.completion} more`,
    details: { limit: ctx.positions, prompt_bytes: need.bytes, min_prompt_tokens: need.prompt, max_tokens: need.completion },
  };
}

/**
 * Miner `miner` refused the task because the prompt does not fit its model. One miner's word fails nothing: the
 * task fails only once every connected miner able to serve it (not benched) has refused it this way, since a
 * miner that has not refused gets the task next. Returns the failure, or null while someone may still run it.
 */
export function refusedByEveryone(task: OpenTask, miner: string, serving: readonly MinerSocket[]): Failure | null {
  const refusers = (task.contextRefusals ??= new Set()).add(miner);
  const model = task.assign.model;
  if (serving.length === 0 || serving.some((m) => !refusers.has(m.claims.address))) return null;
  const limits = serving.map((m) => contextFor(m.claims.contexts, model)?.positions).filter((p): p is number => p !== undefined);
  const limit = limits.length ? Math.max(...limits) : null;
  return {
    code: "context_length_exceeded",
    message: `every connected miner (${serving.length}) refused the task: the prompt does not fit model ${model}'s context${limit ? ` of ${limit} tokens` : ""}`,
    details: { limit, refused_by: serving.map((m) => m.claims.address).sort() },
  };
}
