import { z } from "zod";
import { MAX_TOKENS_LIMIT } from "../../shared/generation.ts";

// OpenAI request bodies as the `openai` client sends them, validated at the gateway's edge. A field the network
// cannot honour is refused with a 400 naming it (OpenAI's `param`), never silently dropped: a field this file
// does not know, a known one the network lacks (tools, logprobs, …), or a value it cannot serve (n > 1;
// response formats the engine cannot constrain, gateway/json-format.ts). `null` stands for "not given", as
// OpenAI treats it.

/** Why a known OpenAI field is refused (the 400's message). */
const UNSUPPORTED: Record<string, string> = {
  tools: "tool calling is not supported",
  tool_choice: "tool calling is not supported",
  functions: "function calling is not supported",
  function_call: "function calling is not supported",
  parallel_tool_calls: "tool calling is not supported",
  logit_bias: "logit_bias is not supported",
  top_logprobs: "logprobs are not supported",
  audio: "audio output is not supported",
  modalities: "only text output is supported",
  prediction: "predicted outputs are not supported",
  reasoning_effort: "the network's models do not reason",
  verbosity: "verbosity is not supported",
  web_search_options: "web search is not supported",
  service_tier: "service tiers are not supported",
  metadata: "stored completions are not supported",
  suffix: "suffix (insertion) is not supported",
};

/** Adds a 400 issue, at the field, for every key of `body` the schema does not list. */
function refuseUnknown(known: readonly string[]) {
  return (body: Record<string, unknown>, ctx: z.RefinementCtx) => {
    for (const key of Object.keys(body)) {
      if (known.includes(key)) continue;
      if (body[key] === null && key in UNSUPPORTED) continue; // an explicit "not given"
      ctx.addIssue({ code: "custom", path: [key], message: UNSUPPORTED[key] ?? `unknown field ${key}` });
    }
  };
}

const opt = <T extends z.ZodType>(t: T) => t.nullish().transform((v) => v ?? undefined);

/** A value that may only be its "off" setting: the field is accepted, anything else refused with `why`. */
const onlyOff = (off: readonly unknown[], why: string) =>
  z
    .unknown()
    .refine((v) => v == null || off.includes(v), { error: why })
    .transform(() => undefined)
    .optional();

const Stop = opt(
  z.union([z.string().min(1).max(64), z.array(z.string().min(1).max(64)).max(8)]).transform((s) => (typeof s === "string" ? [s] : s)),
);
const N = opt(z.literal(1, { error: "only n = 1 is supported (one choice per request)" }));
const StreamOptions = opt(
  // include_obfuscation pads chunks against length side channels; there is nothing to pad here, so it is moot.
  z.object({ include_usage: opt(z.boolean()), include_obfuscation: opt(z.boolean()) }).strict(),
);

/** Decoding fields /chat/completions and /completions share. */
const common = {
  model: z.string().min(1).max(200),
  temperature: opt(z.number().min(0).max(2)),
  top_p: opt(z.number().gt(0).max(1)),
  presence_penalty: opt(z.number().min(-2).max(2)),
  frequency_penalty: opt(z.number().min(-2).max(2)),
  seed: opt(
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1),
  ),
  stop: Stop,
  n: N,
  stream: opt(z.boolean()),
  stream_options: StreamOptions,
  user: opt(z.string().max(256)),
  safety_identifier: opt(z.string().max(256)),
  max_tokens: opt(z.number().int().min(1).max(MAX_TOKENS_LIMIT)),
  store: onlyOff([false], "stored completions are not supported"),
};

const TextPart = z.object({ type: z.literal("text", { error: "only text content parts are supported" }), text: z.string() }).strict();
const Content = z.union([z.string(), z.array(TextPart).min(1)]);

const Message = z
  .object({
    role: z.enum(["system", "developer", "user", "assistant"], { error: "role must be system, developer, user or assistant" }),
    content: Content,
    name: opt(z.string().max(64)),
  })
  .strict();
export type ChatMessage = { role: "system" | "user" | "assistant"; content: string };

/** text, or a json_schema the engine's grammars can spell (gateway/json-format.ts decides, naming the field). */
const ResponseFormat = opt(z.looseObject({ type: z.string() }));

const CHAT_FIELDS = [...Object.keys(common), "messages", "max_completion_tokens", "response_format", "logprobs"];

export const ChatBody = z
  .looseObject({
    ...common,
    messages: z.array(Message).min(1, "messages must not be empty").max(256),
    max_completion_tokens: opt(z.number().int().min(1).max(MAX_TOKENS_LIMIT)),
    response_format: ResponseFormat,
    logprobs: onlyOff([false], "logprobs are not supported"),
  })
  .superRefine(refuseUnknown(CHAT_FIELDS))
  .transform((b) => ({
    ...b,
    // The client's text parts joined; developer messages are system messages (OpenAI's newer name for them).
    messages: b.messages.map(
      (m): ChatMessage => ({
        role: m.role === "developer" ? "system" : m.role,
        content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join(""),
      }),
    ),
  }));
export type ChatBody = z.output<typeof ChatBody>;

const COMPLETION_FIELDS = [...Object.keys(common), "prompt", "echo", "logprobs", "best_of"];

export const CompletionsBody = z
  .looseObject({
    ...common,
    prompt: z.union([
      z.string().min(1, "prompt must not be empty"),
      z
        .array(z.string().min(1))
        .length(1, "prompt takes one string (one choice per request)")
        .transform((a) => a[0]),
    ]),
    echo: onlyOff([false], "echo is not supported"),
    logprobs: onlyOff([0, false], "logprobs are not supported"),
    best_of: opt(z.literal(1, { error: "only best_of = 1 is supported" })),
  })
  .superRefine(refuseUnknown(COMPLETION_FIELDS));
export type CompletionsBody = z.output<typeof CompletionsBody>;

export const EmbeddingsBody = z
  .looseObject({
    model: z.string().min(1).max(200),
    // Bounds (16 texts, bytes) are the network route's (lib/embedding-schemas.ts), checked in ./embeddings.ts.
    input: z.union([z.string(), z.array(z.string())]),
    /** base64: little-endian float32s, what the `openai` client asks for unless told otherwise. */
    encoding_format: opt(z.enum(["float", "base64"], { error: "encoding_format is float or base64" })),
    user: opt(z.string().max(256)),
    dimensions: opt(z.never({ error: "dimensions is not supported: models answer their own size" })),
  })
  .superRefine(refuseUnknown(["model", "input", "encoding_format", "user", "dimensions"]));
export type EmbeddingsBody = z.output<typeof EmbeddingsBody>;
