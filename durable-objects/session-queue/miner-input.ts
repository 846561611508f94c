import type { GenerationParams } from "../../shared/generation.ts";
import { TEXT_BYTES_PER_TOKEN } from "../../shared/protocol.ts";
import type { ConsensusView } from "../../shared/views.ts";
import type { OpenTask } from "./task.ts";

// What a miner reports is bounded by what the router can check. Text: at most TEXT_BYTES_PER_TOKEN bytes per
// completion token the task allows (commits and streams alike). Usage: completion tokens within that bound,
// prompt tokens within the prompt's bytes plus a chat-template allowance; past either, the commit is refused
// (no honest engine reports it). What a task is charged is smaller still: the fewest tokens its agreeing
// replicas report, the prompt share capped at the prompt's bytes, the total at the task's reservation.

type Usage = { prompt_tokens: number; completion_tokens: number };

/**
 * Prompt tokens a chat template and special tokens may add to a prompt read as B bytes (a byte-level or
 * byte-fallback tokenizer reads every other token from at least one byte). Only bounds what a miner may claim;
 * what is charged stays within the prompt's bytes.
 */
export const PROMPT_TOKEN_ALLOWANCE = 4096;

const encoder = new TextEncoder();

export const utf8Bytes = (text: string): number => encoder.encode(text).length;

/** UTF-8 bytes of the longest completion a grammar allows (each choice at its longest). */
function constraintBytes(c: NonNullable<GenerationParams["constraint"]>): number {
  let n = 0;
  for (const s of c.segments) n += "literal" in s ? utf8Bytes(s.literal) : Math.max(...s.choice.map(utf8Bytes));
  return n;
}

/** The most completion tokens a task's answer takes: max_tokens, or a grammar's own length (one token per byte). */
export function completionBound(params: GenerationParams): number {
  return params.constraint ? Math.max(params.max_tokens, constraintBytes(params.constraint) + 1) : params.max_tokens;
}

/** The most UTF-8 bytes a task's answer (committed or streamed) may have. */
export const textByteCap = (params: GenerationParams): number => completionBound(params) * TEXT_BYTES_PER_TOKEN;

/** Why a commit's text or usage is beyond what its task allows, or null. */
export function inputFault(task: Pick<OpenTask, "assign" | "promptBytes">, text: string, usage: Usage): string | null {
  const { params } = task.assign;
  const cap = textByteCap(params);
  // Characters first: a string longer than the cap in UTF-16 units is over it in bytes too, without encoding it.
  if (text.length > cap || utf8Bytes(text) > cap) {
    return `commit text exceeds ${cap} bytes (${TEXT_BYTES_PER_TOKEN} per token of max_tokens ${params.max_tokens})`;
  }
  const completion = completionBound(params);
  if (usage.completion_tokens > completion)
    return `usage claims ${usage.completion_tokens} completion tokens; the task allows ${completion}`;
  const prompt = task.promptBytes + PROMPT_TOKEN_ALLOWANCE;
  if (usage.prompt_tokens > prompt)
    return `usage claims ${usage.prompt_tokens} prompt tokens; a ${task.promptBytes}-byte prompt allows ${prompt}`;
  return null;
}

/**
 * What a closed task charges (and its agreeing replicas share as reward). Prompt tokens: the fewest any agreeing
 * replica reports (all of them read the same prompt with the same model), capped at the prompt's bytes.
 * Completion tokens: the fewest reported for the chosen text by the replicas that produced exactly it (a
 * similarity verdict's other samples legitimately differ), capped at the task's bound. The total never exceeds
 * the reservation. `disputed` names agreeing miners whose report differs from what was charged.
 */
export function checkedUsage(
  task: Pick<OpenTask, "assign" | "promptBytes" | "reservedTokens" | "replicas">,
  consensus: Pick<ConsensusView, "status" | "agreed">,
  chosen: string,
): { usage: Usage & { total_tokens: number }; disputed: string[] } {
  const miners = consensus.status === "agreed" && consensus.agreed.includes(chosen) ? consensus.agreed : [chosen];
  const reports = miners.flatMap((m) => {
    const r = task.replicas.get(m);
    return r?.usage ? [{ miner: m, usage: r.usage, same: r.hash === task.replicas.get(chosen)?.hash }] : [];
  });
  const fewest = (rs: typeof reports, k: keyof Usage) => (rs.length ? Math.min(...rs.map((r) => r.usage[k])) : 0);
  const leastPrompt = fewest(reports, "prompt_tokens");
  const leastCompletion = fewest(
    reports.filter((r) => r.same),
    "completion_tokens",
  );
  const prompt = Math.min(leastPrompt, task.promptBytes);
  const total = Math.min(prompt + Math.min(leastCompletion, completionBound(task.assign.params)), task.reservedTokens);
  const disputed = reports
    .filter((r) => r.usage.prompt_tokens !== leastPrompt || (r.same && r.usage.completion_tokens !== leastCompletion))
    .map((r) => r.miner);
  const charged = Math.min(prompt, total);
  return { usage: { prompt_tokens: charged, completion_tokens: total - charged, total_tokens: total }, disputed };
}
