import { z } from "zod";

/**
 * Constrained decoding: the completion is exactly these segments in order. A `literal` is forced token by
 * token; at a `choice` only token sequences spelling one of the options can be produced, and the model's own
 * logits pick among them (greedy among the allowed tokens, or the task's seeded sampling when temperature >
 * 0). Each segment is tokenized on its own, so every replica produces the same tokens; generation ends when
 * the last segment is complete (max_tokens and stop do not apply).
 */
export const ConstraintSegment = z.union([
  z.object({ literal: z.string().max(256) }).strict(),
  z.object({ choice: z.array(z.string().min(1).max(64)).min(1).max(64) }).strict(),
]);
export type ConstraintSegment = z.infer<typeof ConstraintSegment>;
export const GenerationConstraint = z.object({ segments: z.array(ConstraintSegment).min(1).max(32) });
export type GenerationConstraint = z.infer<typeof GenerationConstraint>;

/** What a verified task checks: every completion position (`fraction` 1), or a random share drawn after the commit. */
export const VerifyOption = z.object({ fraction: z.number().gt(0).max(1) }).strict();
export type VerifyOption = z.infer<typeof VerifyOption>;

/** The most completion tokens a task may ask for. */
export const MAX_TOKENS_LIMIT = 4096;

// Decoding parameters as they travel from the router to the miner. Field names follow Cortensor clients.
export const GenerationParams = z.object({
  max_tokens: z.number().int().min(1).max(MAX_TOKENS_LIMIT),
  temperature: z.number().min(0).max(2),
  top_p: z.number().gt(0).max(1),
  top_k: z.number().int().min(0).max(1000),
  presence_penalty: z.number().min(-2).max(2),
  frequency_penalty: z.number().min(-2).max(2),
  stop: z.array(z.string().min(1).max(64)).max(8),
  /** Seed for sampled decoding, so replicas of one task sample identically. Ignored when greedy. */
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1),
  /** Optional grammar the completion must follow (validation verdicts, scores). */
  constraint: GenerationConstraint.optional(),
  /**
   * Verified sampling (session consensus `verify`, or asked per request): validators re-score the output in one
   * forward pass and check every token (`fraction` < 1: that share of positions, drawn after the commit).
   */
  verify: VerifyOption.optional(),
});
export type GenerationParams = z.infer<typeof GenerationParams>;

export const PromptSpec = z.object({
  prompt: z.string(),
  /** 0: apply the template (the given one, else the model's chat template if it has one); 1: raw. */
  prompt_type: z.union([z.literal(0), z.literal(1)]),
  /** A template with a `{prompt}` placeholder, applied when prompt_type is 0. */
  prompt_template: z.string().max(8192).optional(),
});
export type PromptSpec = z.infer<typeof PromptSpec>;

/** Greedy decoding (temperature 0) is deterministic: exact-hash consensus relies on it. */
export function isGreedy(p: Pick<GenerationParams, "temperature">): boolean {
  return p.temperature === 0;
}

/** Renders the prompt the way every miner must, so replicas see identical input. */
export function renderPrompt(spec: PromptSpec, chatTemplate?: (prompt: string) => string): string {
  if (spec.prompt_type === 1) return spec.prompt;
  if (spec.prompt_template) return spec.prompt_template.split("{prompt}").join(spec.prompt);
  return chatTemplate ? chatTemplate(spec.prompt) : spec.prompt;
}
