import type { PromptSpec } from "../../shared/generation.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";

// The size of a prompt as every model reads it, in UTF-8 bytes: what bounds its token count from below
// (context.ts, with the longest token) and from above (miner-input.ts: a token reads at least one byte).

const encoder = new TextEncoder();

/**
 * UTF-8 bytes of the prompt as every model reads it before any chat template (which only adds): the template
 * with each `{prompt}` replaced, counted without building the string (a template may repeat a huge prompt).
 */
export function promptReadBytes(spec: PromptSpec): number {
  const prompt = encoder.encode(spec.prompt).length;
  if (spec.prompt_type === 1 || !spec.prompt_template) return prompt;
  const parts = spec.prompt_template.split("{prompt}");
  return parts.reduce((n, p) => n + encoder.encode(p).length, 0) + (parts.length - 1) * prompt;
}

/**
 * A task's prompt bytes: an off-chain prompt (empty `input.prompt`) is measured by the router when it stores it
 * (`readBytes`), else by its stored size; an inline one from its spec.
 */
export function taskPromptBytes(input: PromptSpec, payload: PayloadDescriptor | undefined, readBytes?: number): number {
  if (input.prompt !== "" || !payload) return promptReadBytes(input);
  return readBytes ?? Math.max(promptReadBytes(input), payload.prompt_bytes ?? 0);
}
