import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { renderChat } from "./chat-template.ts";
import { runEmbeddings } from "./embeddings.ts";
import { responseConstraint } from "./json-format.ts";
import { modelAllowed, modelMap } from "./model-map.ts";
import { modelObject } from "./responses.ts";
import { DEFAULT_MAX_TOKENS, modelFor, runCompletion, taskRequest } from "./run.ts";
import { ChatBody, CompletionsBody, EmbeddingsBody } from "./schemas.ts";

// The OpenAI-compatible API, mounted at /openai/v1 behind the API-key check (workers/index.ts); errors in
// OpenAI's shape come from ./errors.ts. /models lists exactly what the calling key may use, aliases included
// (each as a model of its own, so a client may pick any name it is shown).

export const gateway = new Hono<AppEnv>();

/** Every name the key may use, with its entry. */
function visibleModels(c: { env: Env; get: (k: "allowedModels") => string[] | undefined }) {
  const allowed = c.get("allowedModels");
  return modelMap(c.env)
    .models.filter((e) => modelAllowed(e, allowed))
    .flatMap((e) => [e.id, ...e.aliases].map((name) => modelObject(e, name)));
}

gateway.get("/models", (c) => c.json({ object: "list", data: visibleModels(c) }));

gateway.get("/models/:id{.+}", (c) => {
  const entry = modelFor(c, c.req.param("id"), "any");
  return c.json(modelObject(entry, c.req.param("id")));
});

gateway.post("/chat/completions", jsonBody(ChatBody), async (c) => {
  const b = c.req.valid("json");
  const entry = modelFor(c, b.model, "chat");
  const prompt = renderChat(entry, b.messages);
  const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? DEFAULT_MAX_TOKENS.chat;
  const req = taskRequest(c, entry, prompt, b, maxTokens, responseConstraint(b.response_format));
  return runCompletion(c, "chat", entry, req, b.stream_options?.include_usage ?? false);
});

gateway.post("/completions", jsonBody(CompletionsBody), async (c) => {
  const b = c.req.valid("json");
  const entry = modelFor(c, b.model, "text");
  const maxTokens = b.max_tokens ?? DEFAULT_MAX_TOKENS.text;
  return runCompletion(c, "text", entry, taskRequest(c, entry, b.prompt, b, maxTokens), b.stream_options?.include_usage ?? false);
});

gateway.post("/embeddings", jsonBody(EmbeddingsBody), (c) => runEmbeddings(c, c.req.valid("json")));
