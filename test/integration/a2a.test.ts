import { type Message, type Part, Role, type Task, TaskState } from "@a2a-js/sdk";
import {
  type Client,
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  Client as SdkClient,
} from "@a2a-js/sdk/client";
import { LegacyJsonRpcTransport } from "@a2a-js/sdk/compat/v0_3/client";
import { RequestMalformedError, TaskNotFoundError } from "@a2a-js/sdk/errors";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// A2A (workers/a2a/) against the real router (wrangler dev, real Durable Objects) and a real miner process,
// driven by the @a2a-js/sdk client itself (card resolver + JSON-RPC transport, 1.0 and the 0.3 compat transport)
// and by raw JSON-RPC where the wire shape is the point. Two tenants, Alice and Bob, each with an API key.

const ALICE = "alice-a2a-key-0123456789abcdef";
const BOB = "bob-a2a-key-0123456789abcdef";
const PROMPT = "The lighthouse keeper";

let router: Router;
let miner: Miner;

const authFetch =
  (key: string | null): typeof fetch =>
  (input, init) => {
    const headers = new Headers(init?.headers);
    if (key) headers.set("authorization", `Bearer ${key}`);
    return fetch(input, { ...init, headers });
  };

/** An SDK client made the way an agent makes one: the card from the router's URL, JSON-RPC with our key. */
async function client(key: string | null): Promise<Client> {
  const fetchImpl = authFetch(key);
  const factory = new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [new JsonRpcTransportFactory({ fetchImpl })],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
  return factory.createFromUrl(router.url);
}

/** The 0.3 wire through the SDK's own compat transport, at the URL the 0.3 card names (what a 0.3 client reads). */
async function legacyClient(key: string): Promise<Client> {
  const legacyCard = (await api(router, "/.well-known/agent.json", { key: null })).body as { url: string; protocolVersion: string };
  expect(legacyCard.protocolVersion).toBe("0.3");
  const card = await new DefaultAgentCardResolver().resolve(router.url);
  return new SdkClient(new LegacyJsonRpcTransport({ endpoint: legacyCard.url, fetchImpl: authFetch(key) }), card);
}

const text = (value: string): Part => ({ content: { $case: "text", value }, mediaType: "text/plain", filename: "", metadata: {} });
const data = (value: unknown): Part => ({ content: { $case: "data", value }, mediaType: "application/json", filename: "", metadata: {} });
const message = (...parts: Part[]): Message => ({
  messageId: crypto.randomUUID(),
  contextId: "",
  taskId: "",
  role: Role.ROLE_USER,
  parts,
  metadata: {},
  extensions: [],
  referenceTaskIds: [],
});
const send = (parts: Part[], returnImmediately = false) => ({
  tenant: "",
  message: message(...parts),
  configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately },
  metadata: {},
});
const asTask = (r: unknown): Task => {
  expect(r).toHaveProperty("status");
  return r as Task;
};
const partsText = (parts: Part[] = []) => parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
const artifactText = (t: Task) => partsText(t.artifacts[0]?.parts);
const partData = (t: Task) => t.artifacts[0]?.parts.find((p) => p.content?.$case === "data")?.content?.value as Record<string, any>;

/** A raw JSON-RPC call: the wire shape itself. */
async function rpc(key: string | null, method: string, params: unknown, headers: Record<string, string> = {}) {
  const res = await authFetch(key)(`${router.url}/api/v1/a2a`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ jsonrpc: "2.0", id: 7, method, params }),
  });
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

const restCompletion = async (key: string, body: Record<string, unknown>) => {
  const res = await api(router, "/api/v1/completions", { key, body: { prompt: PROMPT, max_tokens: 16, temperature: 0, ...body } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { choices: { text: string }[]; task_id: string; session_id: string };
};

/** A REST completion stream as Alice, once its first chunk is in (a miner is on it); the rest drains behind. */
async function openStream(body: Record<string, unknown>) {
  const res = await fetch(`${router.url}/api/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  while (!buffered.includes("\n\n")) buffered += (await reader.read()).value ?? "";
  const first = JSON.parse(buffered.slice(buffered.indexOf("data:") + 5, buffered.indexOf("\n\n"))) as {
    task_id: string;
    session_id: string;
  };
  const drained = (async () => {
    while (!(await reader.read()).done);
  })();
  return { ...first, drained };
}

beforeAll(async () => {
  router = await startRouter({ vars: { API_KEYS: `alice:${ALICE},bob:${BOB}` } });
  // The built-in model writes hundreds of tokens in well under a second: each result of a task asking for 48 tokens
  // or more is held 1.5 s before its precommit, so the cancel, non-blocking and durability tests find their tasks
  // still running; the many short completions (the latency test's 40 among them) are answered at once.
  miner = await startMiner(router.url, {
    name: "a2a",
    concurrency: 2,
    args: ["--test-delay-ms", "1500"],
    env: { MINER_TEST_DELAY_MIN_TOKENS: "48" },
  });
  await miner.waitFor("ready", undefined, 180_000);
}, 240_000);

afterAll(async () => {
  await miner?.stop();
  await router?.stop();
});

describe("discovery", () => {
  it("serves the card at all three URLs without a key, 1.0 or 0.3 as the client asks", async () => {
    for (const path of ["/.well-known/agent-card.json", "/.well-known/agent.json", "/api/v1/a2a/agent.json"]) {
      const card = await new DefaultAgentCardResolver().resolve(router.url, path);
      expect(card.name).toBe("edge-inference-router");
      expect(card.capabilities?.streaming).toBe(true);
      expect(card.skills.map((s) => s.id).sort()).toEqual(["completion", "delegate", "factcheck", "validate"]);
      expect(card.skills.every((s) => s.description.length > 20 && s.examples.length > 0)).toBe(true);
      expect(card.supportedInterfaces.map((i) => [i.url, i.protocolVersion])).toEqual([
        [`${router.url}/api/v1/a2a`, "1.0"],
        [`${router.url}/api/v1/a2a`, "0.3"],
      ]);
      const scheme = Object.values(card.securitySchemes)[0]?.scheme;
      expect(scheme?.$case === "httpAuthSecurityScheme" && scheme.value.scheme).toBe("Bearer");
      // Without A2A-Version the 0.3 card: url, protocolVersion, securitySchemes of type http.
      const legacy = (await api(router, path, { key: null })).body;
      expect(legacy).toMatchObject({ url: `${router.url}/api/v1/a2a`, protocolVersion: "0.3", preferredTransport: "JSONRPC" });
      expect(Object.values(legacy.securitySchemes)[0]).toMatchObject({ type: "http", scheme: "Bearer" });
    }
  });

  it("lists skills, the A2A endpoint and the MCP endpoints in the public discovery document", async () => {
    const res = await api(router, "/api/v1/a2a/discovery", { key: null });
    expect(res.status).toBe(200);
    expect(res.body.a2a.jsonrpc).toBe(`${router.url}/api/v1/a2a`);
    expect(res.body.a2a.agent_cards).toContain(`${router.url}/.well-known/agent-card.json`);
    expect(res.body.skills.map((s: { id: string }) => s.id)).toEqual(["completion", "delegate", "validate", "factcheck"]);
    expect(res.body.mcp.streamable_http).toEqual([`${router.url}/mcp`, `${router.url}/mcp/messages`]);
    expect(res.body.mcp.legacy_sse).toEqual([`${router.url}/sse`, `${router.url}/mcp/legacy`]);
  });

  it("refuses JSON-RPC without a valid key with the router's 401", async () => {
    for (const key of [null, "not-a-key-0123456789abcdefgh"]) {
      const res = await rpc(key, "SendMessage", send([text(PROMPT)]));
      expect(res.status).toBe(401);
      expect(JSON.parse(res.body)).toMatchObject({ request_id: expect.any(String), error: { code: "unauthorized" } });
    }
    const anonymous = await client(null);
    await expect(anonymous.sendMessage(send([text(PROMPT)]))).rejects.toThrow(/401/);
  });

  it("bounds the body (1 MiB of work plus the envelope) and refuses protocol versions it does not speak", async () => {
    const huge = await rpc(ALICE, "SendMessage", send([text("x".repeat(1200 * 1024))]));
    expect(huge.status).toBe(413);
    expect(JSON.parse(huge.body).error.code).toBe("payload_too_large");
    const future = await rpc(ALICE, "SendMessage", send([text(PROMPT)]), { "A2A-Version": "9.9" });
    expect(JSON.parse(future.body).error.code).toBe(-32009);
  });
});

describe("skills (A2A 1.0 through the SDK client)", () => {
  it("answers a plain text message with the completion REST gives at temperature 0", async () => {
    const rest = await restCompletion(ALICE, {});
    const task = asTask(await (await client(ALICE)).sendMessage(send([text(PROMPT), data({ max_tokens: 16 })])));
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(artifactText(task)).toBe(rest.choices[0].text);
    expect(task.metadata?.router_task).toMatchObject({ session_id: rest.session_id, task_id: expect.any(String) });
  });

  it("runs delegate from a data part as the REST route does", async () => {
    const body = { task_request_input: "Name a colour.", max_tokens: 12 };
    const rest = await api(router, "/api/v1/delegate", { key: ALICE, body });
    expect(rest.status, JSON.stringify(rest.body)).toBe(200);
    const task = asTask(await (await client(ALICE)).sendMessage(send([data({ skill: "delegate", ...body })])));
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(partData(task)).toMatchObject({ version: "v1", output: rest.body.output });
    expect(artifactText(task)).toBe(rest.body.output);
  });

  it("streams tokens as artifact updates before the final state, and GetTask sees the result from a fresh client", async () => {
    const a = await client(ALICE);
    const seen: string[] = [];
    let tokens = "";
    let taskId = "";
    for await (const ev of a.sendMessageStream(send([text(PROMPT), data({ max_tokens: 24 })]))) {
      const p = ev.payload;
      if (p?.$case === "task") taskId = p.value.id;
      if (p?.$case === "artifactUpdate") {
        seen.push(p.value.append || !p.value.lastChunk ? "token" : "final");
        if (!p.value.lastChunk) tokens += partsText(p.value.artifact?.parts);
      }
      if (p?.$case === "statusUpdate") seen.push(`state:${p.value.status?.state}`);
    }
    expect(seen.filter((s) => s === "token").length).toBeGreaterThan(3);
    expect(seen.indexOf("token")).toBeLessThan(seen.indexOf(`state:${TaskState.TASK_STATE_COMPLETED}`));
    expect(seen.at(-1)).toBe(`state:${TaskState.TASK_STATE_COMPLETED}`);
    const got = await (await client(ALICE)).getTask({ tenant: "", id: taskId });
    expect(got.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(artifactText(got)).toBe(tokens);
    expect(tokens).toBe((await restCompletion(ALICE, { max_tokens: 24 })).choices[0].text);
  });

  it("keeps a non-blocking task running after the answer; another client sees it finish", async () => {
    const first = asTask(await (await client(ALICE)).sendMessage(send([text(PROMPT), data({ max_tokens: 48 })], true)));
    expect(first.status?.state).not.toBe(TaskState.TASK_STATE_COMPLETED);
    const other = await client(ALICE);
    const done = await until(async () => {
      const t = await other.getTask({ tenant: "", id: first.id });
      return t.status?.state === TaskState.TASK_STATE_COMPLETED ? t : null;
    }, 60_000);
    expect(artifactText(done)).toBe((await restCompletion(ALICE, { max_tokens: 48 })).choices[0].text);
  });

  it("cancels a running streamed completion: the A2A task is canceled and so is the router task", async () => {
    const a = await client(ALICE);
    const stream = a.sendMessageStream(send([text(PROMPT), data({ max_tokens: 400 })]));
    let taskId = "";
    let canceled: Task | null = null;
    const states: number[] = [];
    for await (const ev of stream) {
      const p = ev.payload;
      if (p?.$case === "task") taskId = p.value.id;
      if (p?.$case === "statusUpdate") states.push(p.value.status?.state ?? -1);
      // At the first token, another client (another request, maybe another isolate) cancels it.
      if (p?.$case === "artifactUpdate" && !canceled)
        canceled = await (await client(ALICE)).cancelTask({ tenant: "", id: taskId, metadata: {} });
    }
    expect(canceled?.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect(states.at(-1)).toBe(TaskState.TASK_STATE_CANCELED);
    const got = await (await client(ALICE)).getTask({ tenant: "", id: taskId });
    expect(got.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    const ref = got.metadata?.router_task as { session_id: string; task_id: string };
    const view = await until(async () => {
      const r = await api(router, `/api/v1/tasks/${ref.session_id}/${ref.task_id}`, { key: ALICE });
      return r.body.status === "failed" ? r.body : null;
    });
    expect(view.error.code).toBe("task_cancelled");
    expect(view.result?.usage?.completion_tokens ?? 0).toBeLessThan(400);
  });

  it("cancels a completion before its first token: the executor cancels the router task when it learns its id", async () => {
    // The miner's two slots run long REST streams (each has sent a token), so the A2A task waits without one.
    const busy = await Promise.all([0, 1].map(() => openStream({ prompt: PROMPT, max_tokens: 400, stream: true })));
    const a = await client(ALICE);
    let canceled: Task | null = null;
    const states: number[] = [];
    for await (const ev of a.sendMessageStream(send([text(PROMPT), data({ max_tokens: 400 })]))) {
      const p = ev.payload;
      if (p?.$case === "statusUpdate") states.push(p.value.status?.state ?? -1);
      if (p?.$case === "task" && !canceled) {
        canceled = await (await client(ALICE)).cancelTask({ tenant: "", id: p.value.id, metadata: {} });
        // Free the slots: the queued router task starts, and its first token tells the executor its id.
        for (const b of busy) await api(router, `/api/v1/tasks/${b.session_id}/${b.task_id}/cancel`, { key: ALICE, body: {} });
      }
    }
    expect(canceled?.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect(canceled?.metadata?.router_task).toBeUndefined(); // no router task id was known at the cancel
    expect(states.at(-1)).toBe(TaskState.TASK_STATE_CANCELED);
    // The newest of Alice's router tasks in the default session is this one, and it was cancelled.
    const view = await until(async () => {
      const r = await api(router, "/api/v1/tasks/default?limit=1", { key: ALICE });
      const t = r.body.tasks?.[0];
      return t && !busy.some((b) => b.task_id === t.task_id) && t.status === "failed" ? t : null;
    });
    expect(view.error.code).toBe("task_cancelled");
    expect(view.params.max_tokens).toBe(400);
    await Promise.all(busy.map((b) => b.drained));
  });

  it("keeps a delegate task canceled when its work finishes after the cancel", async () => {
    const a = await client(ALICE);
    let taskId = "";
    const states: number[] = [];
    const body = { skill: "delegate", task_request_input: "Describe a lighthouse.", max_tokens: 64 };
    for await (const ev of a.sendMessageStream(send([data(body)]))) {
      const p = ev.payload;
      if (p?.$case === "statusUpdate") states.push(p.value.status?.state ?? -1);
      if (p?.$case === "task" && !taskId) {
        taskId = p.value.id;
        const canceled = await (await client(ALICE)).cancelTask({ tenant: "", id: taskId, metadata: {} });
        expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
      }
    }
    expect(states).not.toContain(TaskState.TASK_STATE_COMPLETED);
    expect(states.at(-1)).toBe(TaskState.TASK_STATE_CANCELED);
    const got = await (await client(ALICE)).getTask({ tenant: "", id: taskId });
    expect(got.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect(got.artifacts).toEqual([]);
  });

  it("ends a task failed with the router's error code when REST refuses the work", async () => {
    const task = asTask(await (await client(ALICE)).sendMessage(send([text(PROMPT), data({ session_id: "no-such-session" })])));
    expect(task.status?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(task.metadata?.error).toMatchObject({ code: "session_not_found" });
    expect(partsText(task.status?.message?.parts)).toMatch(/^session_not_found: /);
  });

  it("refuses a bad message as invalid params, before any task exists", async () => {
    const taskCount = async () => JSON.parse((await rpc(ALICE, "ListTasks", { pageSize: 1 })).body).result.totalSize as number;
    const before = await taskCount();
    const a = await client(ALICE);
    const bad = await a.sendMessage(send([text(PROMPT), data({ max_tokens: -1 })])).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(RequestMalformedError);
    expect((bad as Error).message).toMatch(/completion skill's fields are invalid: max_tokens: /);
    for (const params of [
      send([data({ skill: "teleport", prompt: PROMPT })]),
      send([data({ skill: "delegate" })]),
      send([data([1, 2, 3])]),
      send([]),
    ]) {
      const res = await rpc(ALICE, "SendMessage", params, { "A2A-Version": "1.0" });
      expect(JSON.parse(res.body).error.code, res.body).toBe(-32602);
    }
    // A follow-up naming a task (anyone's, existing or not) is refused before any lookup: no existence oracle.
    const followUp = send([text(PROMPT)]);
    followUp.message.taskId = crypto.randomUUID();
    expect(JSON.parse((await rpc(ALICE, "SendMessage", followUp)).body).error.code).toBe(-32004);
    expect(await taskCount()).toBe(before);
  });
});

describe("protocol 0.3", () => {
  it("serves message/send, tasks/get and tasks/cancel through the SDK's 0.3 transport", async () => {
    const legacy = await legacyClient(ALICE);
    expect(legacy.protocolVersion).toBe("0.3");
    const task = asTask(await legacy.sendMessage(send([text(PROMPT), data({ max_tokens: 16 })])));
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(artifactText(task)).toBe((await restCompletion(ALICE, {})).choices[0].text);
    expect((await legacy.getTask({ tenant: "", id: task.id })).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    let events = 0;
    for await (const ev of legacy.sendMessageStream(send([text(PROMPT), data({ max_tokens: 8 })]))) if (ev.payload) events++;
    expect(events).toBeGreaterThan(4);
  });

  it("answers the 0.3 wire shapes to raw JSON-RPC", async () => {
    const msg = {
      kind: "message",
      messageId: crypto.randomUUID(),
      role: "user",
      parts: [
        { kind: "text", text: PROMPT },
        { kind: "data", data: { max_tokens: 8 } },
      ],
    };
    const sent = JSON.parse((await rpc(ALICE, "message/send", { message: msg })).body);
    expect(sent.result).toMatchObject({ kind: "task", status: { state: "completed" }, artifacts: [{ parts: [{ kind: "text" }] }] });
    const got = JSON.parse((await rpc(ALICE, "tasks/get", { id: sent.result.id })).body);
    expect(got.result).toMatchObject({ kind: "task", id: sent.result.id, status: { state: "completed" } });
    const cancel = JSON.parse((await rpc(ALICE, "tasks/cancel", { id: sent.result.id })).body);
    expect(cancel.error.code).toBe(-32002); // a completed task is not cancelable
    const streamed = await rpc(ALICE, "message/stream", { message: { ...msg, messageId: crypto.randomUUID() } });
    expect(streamed.type).toMatch(/^text\/event-stream/);
    const frames = streamed.body
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => JSON.parse(l.slice(5)).result);
    expect(frames[0].kind).toBe("task");
    expect(frames.some((f) => f.kind === "artifact-update")).toBe(true);
    expect(frames.at(-1)).toMatchObject({ kind: "status-update", final: true, status: { state: "completed" } });
    const unknown = JSON.parse((await rpc(ALICE, "tasks/get", { id: crypto.randomUUID() })).body);
    expect(unknown.error.code).toBe(-32001);
  });
});

describe("tenancy", () => {
  it("answers another owner's task as an unknown id and leaves it running", async () => {
    const alice = await client(ALICE);
    const bob = await client(BOB);
    const running = asTask(await alice.sendMessage(send([text(PROMPT), data({ max_tokens: 96 })], true)));
    const unknownId = crypto.randomUUID();
    const probe = async (id: string) => {
      const errs: string[] = [];
      for (const call of [() => bob.getTask({ tenant: "", id }), () => bob.cancelTask({ tenant: "", id, metadata: {} })]) {
        const err = await call().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(TaskNotFoundError);
        errs.push(String((err as Error).message).replace(id, "<id>"));
      }
      return errs;
    };
    expect(await probe(running.id)).toEqual(await probe(unknownId));
    // The same with a tenant field Bob picks, and over the 0.3 names.
    for (const method of ["tasks/get", "tasks/cancel"]) {
      const res = JSON.parse((await rpc(BOB, method, { id: running.id, tenant: "alice" })).body);
      expect(res.error.code).toBe(-32001);
    }
    const done = await until(async () => {
      const t = await alice.getTask({ tenant: "", id: running.id });
      return t.status?.state === TaskState.TASK_STATE_COMPLETED ? t : null;
    }, 60_000);
    expect(artifactText(done).length).toBeGreaterThan(0);
    const listed = JSON.parse((await rpc(BOB, "ListTasks", { pageSize: 100 })).body).result.tasks;
    expect(listed.map((t: { id: string }) => t.id)).not.toContain(running.id);
  });
});

describe("latency", () => {
  it("measures a small completion through A2A SendMessage against the same REST call", async () => {
    const a = await client(ALICE);
    const times = { rest: [] as number[], a2a: [] as number[] };
    const restText = (await restCompletion(ALICE, { max_tokens: 4 })).choices[0].text;
    for (let i = 0; i < 20; i++) {
      let t0 = performance.now();
      expect((await restCompletion(ALICE, { max_tokens: 4 })).choices[0].text).toBe(restText);
      times.rest.push(performance.now() - t0);
      t0 = performance.now();
      const task = asTask(await a.sendMessage(send([text(PROMPT), data({ max_tokens: 4 })])));
      times.a2a.push(performance.now() - t0);
      expect(artifactText(task)).toBe(restText);
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    console.log(`A2A SendMessage p50 ${median(times.a2a).toFixed(1)} ms, REST p50 ${median(times.rest).toFixed(1)} ms (20 each)`);
    expect(times.a2a.length + times.rest.length).toBe(40);
  });
});

describe("durability", () => {
  it("ends a non-blocking completion whose executor died with the router: GetTask reads its router task", async () => {
    const running = asTask(await (await client(ALICE)).sendMessage(send([text(PROMPT), data({ max_tokens: 300 })], true)));
    // Once the executor has recorded the router task, the router (and the executor's isolate) goes down.
    await until(async () => (await (await client(ALICE)).getTask({ tenant: "", id: running.id })).metadata?.router_task);
    const { port, persistDir } = router;
    await router.stop("SIGKILL");
    router = await startRouter({ port, persistDir, vars: { API_KEYS: `alice:${ALICE},bob:${BOB}` } });
    const done = await until(
      async () => {
        const t = await (await client(ALICE)).getTask({ tenant: "", id: running.id });
        return t.status?.state === TaskState.TASK_STATE_COMPLETED ? t : null;
      },
      90_000,
      500,
    );
    expect(artifactText(done)).toBe((await restCompletion(ALICE, { max_tokens: 300 })).choices[0].text);
  }, 180_000);
});
