import { z } from "zod";
import { ApiError } from "../lib/api-error.ts";
import { SESSION_ID } from "../lib/schemas.ts";

// The gateway's model map (the MODEL_MAP var, JSON): public model names and aliases → the network model that
// serves them, the session pool their tasks go to, redundancy, and price. It decides what `/openai/v1/models`
// lists and what every OpenAI-style request runs on; KEYS (allowed models) and RECEIPTS (cost) read it too.
//
// Prices are integer USD micro-units (µUSD, 1e-6 USD) per 1,000,000 tokens, prompt and completion apart; a
// request costs ceil(tokens × price / 1e6) µUSD for each part, so per-request costs are integers that add up.

export type ModelKind = "chat" | "completion" | "embedding";

/** The vars this module reads (a structural part of the Worker's Env, so Node-side tests can import it too). */
export interface MapEnv {
  MODEL_MAP?: string;
  DEFAULT_MODEL?: string;
  EMBEDDING_MODEL?: string;
  DEFAULT_SESSION_ID?: string;
}

const Price = z.object({
  /** µUSD per 1M prompt tokens (500000 = $0.50 per 1M). */
  prompt_per_1m: z.number().int().min(0).max(1e12),
  /** µUSD per 1M completion tokens. */
  completion_per_1m: z.number().int().min(0).max(1e12),
});
export type ModelPrice = z.infer<typeof Price>;

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/, "model names are 1–128 letters, digits or . _ : / -");

const Entry = z
  .object({
    /** The public name `/models` lists. */
    id: Name,
    /** More public names for the same entry (e.g. `tiny-gpt2`, or `gpt-3.5-turbo` where an operator wants one). */
    aliases: z.array(Name).max(16).default([]),
    /** The network's model id: what sessions serve and miners run. */
    network_model: z.string().min(1).max(200),
    /** chat models also serve /completions; embedding models only /embeddings. */
    kind: z.enum(["chat", "completion", "embedding"]).default("chat"),
    /** Session pool, spread at random; empty: DEFAULT_SESSION_ID. Ids here are created on first use, shared. */
    sessions: z.array(z.string().regex(SESSION_ID)).max(32).default([]),
    /** Redundancy of the pool's sessions when created here, and a cap on each task's replicas. */
    redundancy: z.number().int().min(1).max(9).optional(),
    price: Price.default({ prompt_per_1m: 0, completion_per_1m: 0 }),
    /**
     * A Jinja chat template as in a model's tokenizer_config.json (rendered with @huggingface/jinja, the engine
     * transformers.js uses); absent: the gateway's simple template (workers/gateway/chat-template.ts).
     */
    chat_template: z.string().min(1).max(16_384).optional(),
    bos_token: z.string().max(64).default(""),
    eos_token: z.string().max(64).default(""),
    owned_by: z.string().max(100).default("edge-inference-network"),
    /** Unix seconds, as `/models` shows it. */
    created: z.number().int().min(0).default(0),
  })
  .strict();
export type ModelEntry = z.infer<typeof Entry>;

const MapSchema = z
  .object({ models: z.array(Entry).min(1).max(256) })
  .strict()
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    for (const [i, e] of m.models.entries()) {
      for (const name of [e.id, ...e.aliases]) {
        if (seen.has(name)) ctx.addIssue({ code: "custom", path: ["models", i], message: `model name ${name} is used twice` });
        seen.add(name);
      }
    }
  });
export type ModelMap = z.infer<typeof MapSchema>;

/** Default prices of the built-in models: token-cheap, not free, so cost shows in every answer. */
export const BUILTIN_PRICE: ModelPrice = { prompt_per_1m: 100_000, completion_per_1m: 200_000 };

/** The map when MODEL_MAP is empty: the default model (chat) and the embedding model, each with a short alias. */
function builtinMap(env: MapEnv): ModelMap {
  const chat = env.DEFAULT_MODEL || "edge/tiny-gpt2";
  const embed = env.EMBEDDING_MODEL || "edge/tiny-embed";
  const alias = (id: string) => (id.includes("/") ? [id.slice(id.lastIndexOf("/") + 1)] : []);
  return MapSchema.parse({
    models: [
      { id: chat, aliases: alias(chat), network_model: chat, kind: "chat", price: BUILTIN_PRICE },
      { id: embed, aliases: alias(embed), network_model: embed, kind: "embedding", price: BUILTIN_PRICE },
    ],
  });
}

let cached: { raw: string; defaults: string; map: ModelMap | null; problems: string[] } | null = null;

function load(env: MapEnv) {
  const raw = env.MODEL_MAP?.trim() ?? "";
  const defaults = `${env.DEFAULT_MODEL}\n${env.EMBEDDING_MODEL}`;
  if (cached?.raw === raw && cached.defaults === defaults) return cached;
  let map: ModelMap | null = null;
  let problems: string[] = [];
  if (!raw) map = builtinMap(env);
  else {
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      json = undefined;
      problems = ["MODEL_MAP is not valid JSON"];
    }
    if (json !== undefined) {
      const parsed = MapSchema.safeParse(json);
      if (parsed.success) map = parsed.data;
      else problems = parsed.error.issues.map((i) => `MODEL_MAP ${i.path.join(".") || "(root)"}: ${i.message}`);
    }
  }
  cached = { raw, defaults, map, problems };
  return cached;
}

/** Problems with MODEL_MAP, each starting "MODEL_MAP " (the config guard refuses to serve on any); [] when fine. */
export function modelMapProblems(env: MapEnv): string[] {
  return load(env).problems;
}

/** The model map (parsed once per isolate and value). A malformed MODEL_MAP throws 503 configuration_error. */
export function modelMap(env: MapEnv): ModelMap {
  const { map } = load(env);
  if (!map)
    throw new ApiError("configuration_error", "the gateway's MODEL_MAP is malformed (see the router's log)", { variables: ["MODEL_MAP"] });
  return map;
}

/** A public name or alias → its entry, else null (exact, case-sensitive). */
export function resolveModel(env: MapEnv, name: string): ModelEntry | null {
  return modelMap(env).models.find((e) => e.id === name || e.aliases.includes(name)) ?? null;
}

/** The first entry a NETWORK model id is served under (for answers that know only the network model), else null. */
export function entryForNetworkModel(env: MapEnv, networkModel: string): ModelEntry | null {
  return modelMap(env).models.find((e) => e.network_model === networkModel) ?? null;
}

/**
 * Whether a key limited to `allowed` (public names, aliases or network model ids; undefined: every model) may
 * use `entry`: any of its names counts.
 */
export function modelAllowed(entry: ModelEntry, allowed: readonly string[] | undefined): boolean {
  return allowed === undefined || [entry.id, ...entry.aliases, entry.network_model].some((n) => allowed.includes(n));
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}
export interface Cost {
  currency: "USD";
  unit: "micro_usd";
  prompt: number;
  completion: number;
  total: number;
}

/** What `usage` costs at `price`, in integer µUSD (each part rounded up). */
export function priceOf(price: ModelPrice, usage: Usage): Cost {
  const prompt = Math.ceil((usage.prompt_tokens * price.prompt_per_1m) / 1e6);
  const completion = Math.ceil((usage.completion_tokens * price.completion_per_1m) / 1e6);
  return { currency: "USD", unit: "micro_usd", prompt, completion, total: prompt + completion };
}

/** The price of a public name, an alias, or a network model id; null when the map has none of them. */
export function priceForModel(env: MapEnv, model: string): ModelPrice | null {
  return (resolveModel(env, model) ?? entryForNetworkModel(env, model))?.price ?? null;
}

/** The session a request for `entry` goes to: one of its pool at random, else the default session. */
export function sessionFor(env: MapEnv, entry: ModelEntry): string | undefined {
  if (entry.sessions.length === 0) return env.DEFAULT_SESSION_ID || undefined;
  return entry.sessions[Math.floor(Math.random() * entry.sessions.length)];
}

/** Whether `id` is a session some model-map entry configures (such ids are reserved: created on first use, shared). */
export function modelMapSession(env: MapEnv, id: string): ModelEntry | null {
  const { map } = load(env);
  return map?.models.find((e) => e.sessions.includes(id)) ?? null;
}
