import OpenAI, { AuthenticationError, BadRequestError, InternalServerError, NotFoundError, RateLimitError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY, api, type Miner, type Router, startMiner, startRouter } from "../helpers/network.ts";

// The OpenAI-compatible API (/openai/v1, workers/gateway/) driven by the official `openai` client, unmodified,
// against a real router (wrangler dev) and real miners: what a chat or completion answers must be exactly what
// the network's REST completion answers for the same prompt, the stream must add up to the plain answer, and
// every refusal must reach the client as its typed error with OpenAI's fields and the router's request id.

let router: Router;
/** A second router with a per-key rate limit of LIMIT requests per 10 s (no miners: /models needs none). */
let limited: Router;
/** A router whose MODEL_MAP is malformed: it refuses to serve. */
let misconfigured: Router;
let miners: Miner[] = [];
const LIMIT = 3;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const client = (r: Router, opts: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) =>
  new OpenAI({ apiKey: API_KEY, baseURL: `${r.url}/openai/v1`, maxRetries: 0, ...opts });

beforeAll(async () => {
  [router, limited, misconfigured] = await Promise.all([
    startRouter(),
    startRouter({ rateLimits: { RATE_LIMIT_KEY: LIMIT } }),
    startRouter({ vars: { MODEL_MAP: '{"models": [{"id": "x"}]}' }, allowConfigError: true }),
  ]);
  miners = await Promise.all([startMiner(router.url, { name: "g1" }), startMiner(router.url, { name: "g2" })]);
  await Promise.all(miners.map((m) => m.waitFor("ready")));
});

afterAll(async () => {
  await Promise.all(miners.map((m) => m.stop("SIGKILL")));
  await Promise.all([router?.stop(), limited?.stop(), misconfigured?.stop()]);
});

/** The documented simple chat template of the built-in model (README, workers/gateway/chat-template.ts). */
const rendered = (messages: { role: string; content: string }[]) =>
  `${messages.map((m) => `${m.role[0].toUpperCase()}${m.role.slice(1)}: ${m.content}\n`).join("")}Assistant:`;

/** The REST v1 completion of a raw prompt, greedy: what the gateway's answer must equal. */
async function restCompletion(prompt: string, maxTokens: number) {
  const res = await api(router, "/api/v1/completions", { body: { prompt, prompt_type: 1, max_tokens: maxTokens, temperature: 0 } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.choices[0] as { text: string; finish_reason: string };
}

/** An error thrown by `fn`, which must throw. */
async function thrown(fn: () => Promise<unknown>): Promise<any> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected the call to throw");
}

describe("models", () => {
  it("lists the model map's names, retrieves one by name or alias, and 404s an unknown one", async () => {
    const ai = client(router);
    const list = await ai.models.list();
    const ids = list.data.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining(["edge/tiny-gpt2", "tiny-gpt2", "edge/tiny-embed", "tiny-embed"]));
    for (const m of list.data) expect(m).toMatchObject({ object: "model", owned_by: expect.any(String), created: expect.any(Number) });

    expect((await ai.models.retrieve("edge/tiny-gpt2")).id).toBe("edge/tiny-gpt2");
    expect((await ai.models.retrieve("tiny-gpt2")).id).toBe("tiny-gpt2");

    const err = await thrown(() => ai.models.retrieve("gpt-4o"));
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.code).toBe("model_not_found");
    expect(err.param).toBe("model");
    expect(err.requestID).toMatch(UUID);
  });
});

describe("chat completions", () => {
  const messages = [
    { role: "system" as const, content: "You are a storyteller." },
    { role: "user" as const, content: "Tell me about the little fox." },
  ];

  it("answers what the REST completion of the rendered prompt answers, with usage, cost and the request id", async () => {
    const ai = client(router);
    const { data, response, request_id } = await ai.chat.completions
      .create({ model: "tiny-gpt2", messages, max_tokens: 8, temperature: 0 })
      .withResponse();
    const rest = await restCompletion(rendered(messages), 8);
    expect(data.object).toBe("chat.completion");
    expect(data.model).toBe("edge/tiny-gpt2");
    expect(data.choices).toHaveLength(1);
    expect(rest.text.length).toBeGreaterThan(0);
    expect(data.choices[0].message).toMatchObject({ role: "assistant", content: rest.text });
    expect(data.choices[0].finish_reason).toBe(rest.finish_reason);
    expect(data.usage!.completion_tokens).toBeGreaterThan(0);
    expect(data.usage!.total_tokens).toBe(data.usage!.prompt_tokens + data.usage!.completion_tokens);
    // The built-in price: 100000 µUSD per 1M prompt tokens, 200000 per 1M completion tokens, each part rounded up.
    const cost = (data as unknown as { cost: { prompt: number; completion: number; total: number } }).cost;
    expect(cost.prompt).toBe(Math.ceil((data.usage!.prompt_tokens * 100_000) / 1e6));
    expect(cost.total).toBe(cost.prompt + Math.ceil((data.usage!.completion_tokens * 200_000) / 1e6));
    expect(request_id).toMatch(UUID);
    expect(request_id).toBe(response.headers.get("x-request-id"));
    expect((data as { _request_id?: string | null })._request_id).toBe(request_id);
  });

  it("a json_schema of known values is honoured by the engine's grammar", async () => {
    const ai = client(router);
    const schema = {
      type: "object",
      properties: { mood: { type: "string", enum: ["happy", "sad", "sleepy"] }, hungry: { type: "boolean" } },
      required: ["mood", "hungry"],
      additionalProperties: false,
    };
    const answer = await ai.chat.completions.create({
      model: "tiny-gpt2",
      messages: [{ role: "user", content: "How is the little fox?" }],
      response_format: { type: "json_schema", json_schema: { name: "fox", schema, strict: true } },
    });
    const parsed = JSON.parse(answer.choices[0].message.content!);
    expect(Object.keys(parsed)).toEqual(["mood", "hungry"]);
    expect(["happy", "sad", "sleepy"]).toContain(parsed.mood);
    expect(typeof parsed.hungry).toBe("boolean");
  });

  it("streams chunks that add up to the plain answer, the usage chunk last", async () => {
    const ai = client(router);
    const plain = await ai.chat.completions.create({ model: "edge/tiny-gpt2", messages, max_completion_tokens: 8, temperature: 0 });
    const stream = await ai.chat.completions.create({
      model: "edge/tiny-gpt2",
      messages,
      max_completion_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    for (const ch of chunks) expect(ch.object).toBe("chat.completion.chunk");
    expect(new Set(chunks.map((ch) => ch.id)).size).toBe(1);
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    const text = chunks.flatMap((ch) => ch.choices.map((c) => c.delta.content ?? "")).join("");
    expect(text).toBe(plain.choices[0].message.content);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(plain.usage);
    expect(chunks.at(-2)!.choices[0].finish_reason).toBe(plain.choices[0].finish_reason);
  });
});

describe("completions", () => {
  const prompt = "Once upon a time";

  it("answers the REST completion of the raw prompt, plain and streamed", async () => {
    const ai = client(router);
    const plain = await ai.completions.create({ model: "tiny-gpt2", prompt, max_tokens: 8, temperature: 0 });
    const rest = await restCompletion(prompt, 8);
    expect(plain.object).toBe("text_completion");
    expect(plain.choices[0].text).toBe(rest.text);
    expect(plain.choices[0].finish_reason).toBe(rest.finish_reason);

    const stream = await ai.completions.create({
      model: "tiny-gpt2",
      prompt,
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.map((ch) => ch.choices.map((c) => c.text).join("")).join("")).toBe(rest.text);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual(plain.usage);
  });
});

describe("embeddings", () => {
  it("embeds through the network, as floats and as the client's default base64", async () => {
    const ai = client(router);
    const input = ["the little fox", "a red apple"];
    const floats = await ai.embeddings.create({ model: "tiny-embed", input, encoding_format: "float" });
    expect(floats.object).toBe("list");
    expect(floats.model).toBe("edge/tiny-embed");
    expect(floats.data.map((d) => d.index)).toEqual([0, 1]);
    expect(floats.data[0].embedding.length).toBeGreaterThan(0);
    expect(floats.data[0].embedding).not.toEqual(floats.data[1].embedding);
    expect(floats.usage.prompt_tokens).toBeGreaterThan(0);

    const decoded = await ai.embeddings.create({ model: "edge/tiny-embed", input });
    for (const [i, d] of decoded.data.entries()) {
      expect(d.embedding).toHaveLength(floats.data[i].embedding.length);
      for (const [j, x] of d.embedding.entries()) expect(x).toBeCloseTo(floats.data[i].embedding[j], 5);
    }
  });
});

describe("managed keys", () => {
  /** A managed key of the test owner, made with the static key (self-service, workers/routes/keys.ts). */
  async function managedKey(settings: Record<string, unknown>): Promise<{ id: string; key: string }> {
    const res = await api(router, "/api/v1/keys", { body: { name: "gateway-test", ...settings } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  }

  it("a key limited to some models is shown only those and may use no other", async () => {
    const { key } = await managedKey({ allowed_models: ["tiny-embed"] });
    const ai = client(router, { apiKey: key });
    const ids = (await ai.models.list()).data.map((m) => m.id).sort();
    expect(ids).toEqual(["edge/tiny-embed", "tiny-embed"]);
    expect((await ai.models.retrieve("edge/tiny-embed")).id).toBe("edge/tiny-embed");
    for (const call of [
      () => ai.models.retrieve("tiny-gpt2"),
      () => ai.chat.completions.create({ model: "tiny-gpt2", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
      () => ai.completions.create({ model: "edge/tiny-gpt2", prompt: "hi", max_tokens: 2 }),
    ]) {
      const err = await thrown(call);
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err.code).toBe("model_not_found");
    }
  });

  it("a revoked key is an AuthenticationError at once", async () => {
    const { id, key } = await managedKey({});
    const ai = client(router, { apiKey: key });
    expect((await ai.models.list()).data.length).toBeGreaterThan(0);
    const revoked = await api(router, `/api/v1/keys/${id}/revoke`, { method: "POST" });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    const err = await thrown(() => ai.models.list());
    expect(err).toBeInstanceOf(AuthenticationError);
    expect(err.error).toMatchObject({ type: "authentication_error" });
    expect(err.requestID).toMatch(UUID);
  });
});

describe("refusals reach the client as its typed errors", () => {
  const base = { model: "tiny-gpt2", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 4 };

  it("an unknown model is NotFoundError model_not_found, a model of another kind a BadRequestError", async () => {
    const ai = client(router);
    const err = await thrown(() => ai.chat.completions.create({ ...base, model: "gpt-3.5-turbo" }));
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.status).toBe(404);
    expect(err.error).toMatchObject({ type: "not_found_error", code: "model_not_found", param: "model" });
    expect(err.headers.get("x-should-retry")).toBe("false");

    const kind = await thrown(() => ai.chat.completions.create({ ...base, model: "tiny-embed" }));
    expect(kind).toBeInstanceOf(BadRequestError);
    expect(kind.param).toBe("model");
  });

  it("a field the network cannot honour is a BadRequestError naming it", async () => {
    const ai = client(router);
    const cases: [Record<string, unknown>, string][] = [
      [{ n: 2 }, "n"],
      [{ tools: [{ type: "function", function: { name: "f", parameters: {} } }] }, "tools"],
      [{ response_format: { type: "json_object" } }, "response_format.type"],
      [
        {
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "string" } } } },
          },
        },
        "response_format.json_schema.schema.properties.a",
      ],
      [{ logprobs: true }, "logprobs"],
      [{ messages: [{ role: "tool", content: "x", tool_call_id: "1" }] }, "messages[0].role"],
      [{ temperature: 3 }, "temperature"],
      [{ frobnicate: 1 }, "frobnicate"],
    ];
    for (const [extra, param] of cases) {
      const err = await thrown(() => ai.chat.completions.create({ ...base, ...extra } as never));
      expect(err, param).toBeInstanceOf(BadRequestError);
      expect(err.param).toBe(param);
      expect(err.type).toBe("invalid_request_error");
      expect(err.message).toContain(param);
      expect(err.requestID).toMatch(UUID);
      expect(err.headers.get("x-should-retry")).toBe("false");
    }
    const completions = await thrown(() => ai.completions.create({ model: "tiny-gpt2", prompt: "x", n: 2 }));
    expect(completions).toBeInstanceOf(BadRequestError);
    expect(completions.param).toBe("n");
  });

  it("a body over the route's limit is refused before it is parsed", async () => {
    const err = await thrown(() =>
      client(router).chat.completions.create({ ...base, messages: [{ role: "user", content: "x".repeat(1_100_000) }] }),
    );
    expect(err.status).toBe(413);
    expect(err.error).toMatchObject({ type: "invalid_request_error", code: "payload_too_large" });
  });

  it("a malformed model map refuses every request with 503 configuration_error naming MODEL_MAP", async () => {
    const err = await thrown(() => client(misconfigured).models.list());
    expect(err).toBeInstanceOf(InternalServerError);
    expect(err.status).toBe(503);
    expect(err.error).toMatchObject({ type: "api_error", code: "configuration_error" });
    expect(err.headers.get("retry-after-ms")).toBeTruthy();
    const rest = await api(misconfigured, "/api/v1/info");
    expect(rest.status).toBe(503);
    expect(rest.body.error.details.variables).toEqual(["MODEL_MAP"]);
  });

  it("a wrong key is an AuthenticationError", async () => {
    const err = await thrown(() => client(router, { apiKey: "not-a-key-of-this-router" }).models.list());
    expect(err).toBeInstanceOf(AuthenticationError);
    expect(err.error).toMatchObject({ type: "authentication_error", code: "unauthorized" });
    expect(err.requestID).toMatch(UUID);
  });

  it("a rate-limited key is a RateLimitError whose retry-after the client's own retries honour", async () => {
    const noRetry = client(limited);
    let err: any;
    for (let i = 0; i <= LIMIT + 1 && !err; i++)
      err = await noRetry.models.list().then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(RateLimitError);
    expect(err.error).toMatchObject({ type: "rate_limit_error", code: "rate_limited" });
    const retryAfter = Number(err.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(err.headers.get("retry-after-ms")).toBe(String(retryAfter * 1000));
    expect(err.requestID).toMatch(UUID);

    // The client's default retries: the first attempt is still limited, the next waits what retry-after said.
    const attempts: { at: number; status: number }[] = [];
    const counting: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      attempts.push({ at: Date.now(), status: res.status });
      return res;
    };
    const retrying = client(limited, { maxRetries: 2, fetch: counting });
    const list = await retrying.models.list();
    expect(list.data.length).toBeGreaterThan(0);
    expect(attempts[0].status).toBe(429);
    expect(attempts.at(-1)!.status).toBe(200);
    expect(attempts[1].at - attempts[0].at).toBeGreaterThanOrEqual(retryAfter * 1000 - 200);
  }, 60_000);
});
