import { Template } from "@huggingface/jinja";
import { ApiError } from "../lib/api-error.ts";
import type { ModelEntry } from "./model-map.ts";
import type { ChatMessage } from "./schemas.ts";

// Chat messages become one prompt here, in the router, and travel raw (prompt_type 1): every replica then reads
// the same bytes, whatever tokenizer files a miner has. A model-map entry with `chat_template` is rendered with
// @huggingface/jinja, the engine transformers.js's apply_chat_template uses, with `add_generation_prompt`. Every
// other model (the built-in edge/tiny-gpt2, which has no template) gets the simple template:
//
//   System: <content>\n      (one line per message, in order: "System", "User" or "Assistant", ": ", the
//   User: <content>\n         content as sent, a newline)
//   Assistant: <content>\n
//   Assistant:               (the generation prompt: the model continues after the colon)

const ROLE: Record<ChatMessage["role"], string> = { system: "System", user: "User", assistant: "Assistant" };

/** The simple template: `Role: content\n` per message, then `Assistant:`. */
export function simpleChatPrompt(messages: readonly ChatMessage[]): string {
  return `${messages.map((m) => `${ROLE[m.role]}: ${m.content}\n`).join("")}Assistant:`;
}

/** Parsed templates by source: the map's few templates parse once per isolate. */
const parsed = new Map<string, Template>();

function template(source: string): Template {
  let t = parsed.get(source);
  if (!t) {
    t = new Template(source);
    if (parsed.size >= 32) parsed.clear();
    parsed.set(source, t);
  }
  return t;
}

/** The prompt `messages` make for `entry`'s model. A template that refuses them (`raise_exception`) answers 400. */
export function renderChat(entry: ModelEntry, messages: readonly ChatMessage[]): string {
  if (!entry.chat_template) return simpleChatPrompt(messages);
  try {
    return template(entry.chat_template).render({
      messages,
      add_generation_prompt: true,
      bos_token: entry.bos_token,
      eos_token: entry.eos_token,
    });
  } catch (err) {
    const why = err instanceof Error ? err.message.slice(0, 200) : "it failed to render";
    throw new ApiError("invalid_request", `the chat template of ${entry.id} refused these messages: ${why}`, [
      { path: "messages", message: why },
    ]);
  }
}
