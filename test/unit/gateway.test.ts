import { exports } from "cloudflare:workers";
import { Hono } from "hono";
import { afterAll, describe, expect, it } from "vitest";
import type { AppEnv } from "../../workers/env.ts";
import { renderChat, simpleChatPrompt } from "../../workers/gateway/chat-template.ts";
import { openaiError, paramOf } from "../../workers/gateway/errors.ts";
import { responseConstraint } from "../../workers/gateway/json-format.ts";
import { type MapEnv, modelAllowed, modelMap, modelMapProblems, priceOf, resolveModel } from "../../workers/gateway/model-map.ts";
import { ChatBody } from "../../workers/gateway/schemas.ts";
import { streamAnswer } from "../../workers/gateway/stream.ts";
import { ApiError } from "../../workers/lib/api-error.ts";
import { ensureConfiguredSession } from "../../workers/lib/sessions.ts";
import { reservedBy } from "../../workers/lib/tenancy.ts";
import { API_KEY, env, json, MinerSet, ORIGIN, sessionStub, uniq } from "./helpers.ts";

// The gateway's parts in the Workers runtime: the model map (MODEL_MAP parsing, aliases, allowed models, prices,
// reserved pool sessions created with the entry's model), chat templates, the error mapping, and the
// /openai/v1 routes through the real router with a protocol-correct test miner.

const router = (exports as unknown as { default: Fetcher }).default;
const miners = new MinerSet();
afterAll(() => miners.closeAll());

function openai(method: string, path: string, body?: unknown, key: string | null = API_KEY): Promise<Response> {
  const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  return router.fetch(`${ORIGIN}/openai/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

const entry = (over: Record<string, unknown>) => ({ id: "a/model", network_model: "net-a", ...over });
const mapEnv = (models: unknown[]): MapEnv => ({ ...env, MODEL_MAP: JSON.stringify({ models }) });

describe("model map", () => {
  it("reads the configured map: names, aliases, network ids, prices", () => {
    const e = mapEnv([
      entry({ aliases: ["gpt-3.5-turbo"], sessions: ["pool-a"], redundancy: 3, price: { prompt_per_1m: 500_000, completion_per_1m: 1 } }),
    ]);
    expect(modelMapProblems(e)).toEqual([]);
    const found = resolveModel(e, "gpt-3.5-turbo");
    expect(found).toMatchObject({ id: "a/model", network_model: "net-a", kind: "chat", sessions: ["pool-a"], redundancy: 3 });
    expect(resolveModel(e, "A/MODEL")).toBeNull();
    expect(modelAllowed(found!, undefined)).toBe(true);
    expect(modelAllowed(found!, ["gpt-3.5-turbo"])).toBe(true);
    expect(modelAllowed(found!, ["net-a"])).toBe(true);
    expect(modelAllowed(found!, ["other"])).toBe(false);
    // Each part rounds up on its own, so per-request costs are integers that add up.
    expect(priceOf(found!.price, { prompt_tokens: 3, completion_tokens: 7 })).toEqual({
      currency: "USD",
      unit: "micro_usd",
      prompt: 2,
      completion: 1,
      total: 3,
    });
    expect(priceOf({ prompt_per_1m: 0, completion_per_1m: 0 }, { prompt_tokens: 1e6, completion_tokens: 1e6 }).total).toBe(0);
  });

  it("the deployed wrangler.toml map lists the built-in models; an empty one defaults to them", () => {
    expect(modelMap(env).models.map((m) => [m.id, m.kind])).toEqual([
      ["edge/tiny-gpt2", "chat"],
      ["edge/tiny-embed", "embedding"],
    ]);
    const builtin = modelMap({ ...env, MODEL_MAP: "" });
    expect(builtin.models.map((m) => [m.id, m.aliases])).toEqual([
      ["edge/tiny-gpt2", ["tiny-gpt2"]],
      ["edge/tiny-embed", ["tiny-embed"]],
    ]);
  });

  it("a malformed map is named as a problem and refuses to serve (configuration_error)", () => {
    const cases: [MapEnv, RegExp][] = [
      [{ ...env, MODEL_MAP: "{not json" }, /not valid JSON/],
      [mapEnv([entry({}), entry({ id: "b", aliases: ["a/model"] })]), /a\/model is used twice/],
      [mapEnv([entry({ sessions: ["bad id!"] })]), /models\.0\.sessions\.0/],
      [mapEnv([entry({ price: { prompt_per_1m: 0.5, completion_per_1m: 0 } })]), /price\.prompt_per_1m/],
      [mapEnv([entry({ surprise: true })]), /MODEL_MAP models\.0/],
    ];
    for (const [e, problem] of cases) {
      const problems = modelMapProblems(e);
      expect(problems.join("\n")).toMatch(problem);
      expect(problems.every((p) => p.startsWith("MODEL_MAP "))).toBe(true);
      expect(() => modelMap(e)).toThrow(ApiError);
    }
  });

  it("reserves pool sessions, created on first use with the entry's model and redundancy", async () => {
    const pool = uniq("pool");
    const e = { ...env, MODEL_MAP: JSON.stringify({ models: [entry({ sessions: [pool] })] }) };
    expect(reservedBy(e as Env, pool)).toBe("MODEL_MAP");
    expect(reservedBy(e as Env, uniq("other"))).toBeUndefined();
    await ensureConfiguredSession(env, pool, "gateway: a/model", { model: "net-a", redundancy: 2 });
    const config = (await sessionStub(pool).describe())!.config;
    expect(config).toMatchObject({ owner: "*", model: "net-a", redundancy: 2 });
  });
});

describe("chat templates", () => {
  const messages = [
    { role: "system" as const, content: "Be brief." },
    { role: "user" as const, content: "Hi" },
    { role: "assistant" as const, content: "Hello." },
    { role: "user" as const, content: "Bye" },
  ];

  it("the simple template: a line per message, then the assistant's turn", () => {
    expect(simpleChatPrompt(messages)).toBe("System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:");
  });

  it("a configured Jinja template renders as transformers.js renders it; one that refuses the messages is a 400", () => {
    const chatml =
      "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const e = modelMap(mapEnv([entry({ chat_template: chatml, bos_token: "<s>" })])).models[0];
    expect(renderChat(e, messages.slice(0, 2))).toBe(
      "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );

    const strict = "{% if messages[0].role != 'user' %}{{ raise_exception('the first message must be the user') }}{% endif %}ok";
    const s = modelMap(mapEnv([entry({ chat_template: strict })])).models[0];
    const err = (() => {
      try {
        renderChat(s, messages);
      } catch (e) {
        return e as ApiError;
      }
    })();
    expect(err).toBeInstanceOf(ApiError);
    expect(err!.status).toBe(400);
    expect(err!.message).toContain("the first message must be the user");
  });
});

describe("response_format as a grammar", () => {
  it("spells a json_schema of enums, consts, booleans and nested objects as literals and choices", () => {
    const schema = {
      type: "object",
      properties: {
        mood: { enum: ["happy", "sad"] },
        ok: { type: "boolean" },
        n: { const: 3 },
        inner: { type: "object", properties: { x: { type: "null" } } },
      },
    };
    expect(responseConstraint({ type: "json_schema", json_schema: { name: "s", schema } })).toEqual({
      segments: [
        { literal: '{"mood":' },
        { choice: ['"happy"', '"sad"'] },
        { literal: ',"ok":' },
        { choice: ["true", "false"] },
        { literal: ',"n":3,"inner":{"x":null}}' },
      ],
    });
    expect(responseConstraint({ type: "text" })).toBeUndefined();
    expect(responseConstraint(undefined)).toBeUndefined();
  });

  it("refuses what a grammar of choices cannot spell, naming the field", () => {
    const refused = (format: { type: string; [k: string]: unknown }) => {
      try {
        responseConstraint(format);
      } catch (err) {
        return ((err as ApiError).details as { path: string }[])[0].path;
      }
      throw new Error("expected a refusal");
    };
    expect(refused({ type: "json_object" })).toBe("response_format.type");
    const free = { type: "object", properties: { name: { type: "string" } } };
    expect(refused({ type: "json_schema", json_schema: { name: "s", schema: free } })).toBe(
      "response_format.json_schema.schema.properties.name",
    );
    const many = { type: "object", properties: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, { type: "boolean" }])) };
    expect(refused({ type: "json_schema", json_schema: { name: "s", schema: many } })).toBe("response_format.json_schema.schema");
    let deep: Record<string, unknown> = { type: "boolean" };
    for (let i = 0; i < 5000; i++) deep = { type: "object", properties: { a: deep } };
    expect(refused({ type: "json_schema", json_schema: { name: "s", schema: deep } })).toBe("response_format.json_schema.schema");
  });
});

describe("requests and errors in OpenAI's shape", () => {
  it("maps field paths and codes as the client reads them", () => {
    expect(paramOf("messages.0.content.1.type")).toBe("messages[0].content[1].type");
    expect(paramOf("(body)")).toBeNull();
    expect(openaiError(404, "not_found", "no such model", [{ path: "model", message: "model_not_found" }]).error).toEqual({
      message: "no such model: model: model_not_found",
      type: "not_found_error",
      param: "model",
      code: "model_not_found",
    });
    expect(openaiError(402, "budget_exhausted", "spent", null).error.type).toBe("insufficient_quota");
    expect(openaiError(503, "no_miner_available", "none", null).error).toMatchObject({ type: "api_error", param: null });
  });

  it("joins text parts and treats developer messages as system ones", () => {
    const b = ChatBody.parse({
      model: "m",
      messages: [
        {
          role: "developer",
          content: [
            { type: "text", text: "a" },
            { type: "text", text: "b" },
          ],
        },
        { role: "user", content: "c" },
      ],
      temperature: null,
    });
    expect(b.messages).toEqual([
      { role: "system", content: "ab" },
      { role: "user", content: "c" },
    ]);
    expect(ChatBody.safeParse({ model: "m", messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }).success).toBe(
      false,
    );
  });

  it("every error under /openai is OpenAI's shape with the request id and retry hints", async () => {
    const noKey = await openai("GET", "/models", undefined, null);
    expect(noKey.status).toBe(401);
    expect(noKey.headers.get("x-should-retry")).toBe("false");
    expect(noKey.headers.get("x-request-id")).toBeTruthy();
    expect((await json(noKey)).error).toMatchObject({ type: "authentication_error", code: "unauthorized", param: null });

    const nowhere = await openai("GET", "/nowhere");
    expect(nowhere.status).toBe(404);
    expect((await json(nowhere)).error).toMatchObject({ type: "not_found_error", code: "not_found" });

    const garbage = await router.fetch(`${ORIGIN}/openai/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: "{not json",
    });
    expect(garbage.status).toBe(400);
    expect((await json(garbage)).error.type).toBe("invalid_request_error");

    // The REST surface keeps its own shape.
    const rest = await router.fetch(`${ORIGIN}/api/v1/nowhere`, { headers: { authorization: `Bearer ${API_KEY}` } });
    expect((await json(rest)).error).toMatchObject({ code: "not_found", details: null });
  });

  it("a failure after the stream started is one OpenAI error event, then [DONE]", async () => {
    const app = new Hono<AppEnv>();
    const events = [
      { t: "token", text: "Once" },
      { t: "error", error: { code: "no_consensus", message: "replicas disagreed" }, task: { task_id: "7", status: "failed" } },
    ];
    const ndjson = new Response(events.map((e) => `${JSON.stringify(e)}\n`).join("")).body!;
    const meta = { kind: "chat" as const, model: "edge/tiny-gpt2", sessionId: "s", taskId: "7", created: Date.now() };
    app.get("/", (c) => streamAnswer(c, meta, ndjson, { includeUsage: true, onDone: async () => ({}) }));
    const frames = (await (await app.request("/")).text())
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trim());
    expect(frames).toHaveLength(3);
    expect(JSON.parse(frames[0]).choices[0].delta).toEqual({ role: "assistant", content: "Once" });
    expect(JSON.parse(frames[1])).toEqual({
      error: { message: "replicas disagreed", type: "conflict_error", param: null, code: "no_consensus" },
    });
    expect(frames[2]).toBe("[DONE]");
  });

  it("a chat is the rendered prompt, sent raw to the model's session; the answer and its stream are OpenAI's", async () => {
    const m = await miners.start({ models: [env.DEFAULT_MODEL], text: (a) => `[${a.input.prompt_type}] ${a.input.prompt}` });
    const messages = [
      { role: "system", content: "S" },
      { role: "user", content: "U" },
    ];
    const pending = openai("POST", "/chat/completions", { model: "tiny-gpt2", messages, max_tokens: 16 });
    await m.join(env.DEFAULT_SESSION_ID!);
    const res = await pending;
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ object: "chat.completion", model: "edge/tiny-gpt2" });
    expect(body.choices[0].message).toMatchObject({ role: "assistant", content: "[1] System: S\nUser: U\nAssistant:" });
    expect(body.id).toMatch(/^chatcmpl-/);
    expect(body.receipt.model).toBe("edge/tiny-gpt2");
    expect(body.cost.total).toBe(body.receipt.cost.total);

    const stream = await openai("POST", "/chat/completions", { model: "tiny-gpt2", messages, max_tokens: 16, stream: true });
    expect(stream.headers.get("content-type")).toContain("text/event-stream");
    const frames = (await stream.text())
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trim());
    expect(frames.at(-1)).toBe("[DONE]");
    const chunks = frames.slice(0, -1).map((f) => JSON.parse(f));
    expect(chunks.map((ch) => ch.choices[0]?.delta?.content ?? "").join("")).toBe(body.choices[0].message.content);
    // Without include_usage the finish chunk is last, and carries the receipt.
    expect(chunks.at(-1).choices[0].finish_reason).toBe(body.choices[0].finish_reason);
    expect(chunks.at(-1).receipt.model).toBe("edge/tiny-gpt2");
  });
});
