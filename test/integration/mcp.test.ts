import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type CallToolResult, LATEST_PROTOCOL_VERSION, type Progress } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// MCP over Streamable HTTP (workers/mcp/) against the real router (wrangler dev) and a real miner, driven by the
// MCP SDK's own Client and StreamableHTTPClientTransport: every tool once with a real outcome checked against
// REST, resources and prompts, progress, cancellation, auth, tenant isolation, bad arguments, sessions.

const ALICE = "alice-key-0123456789abcdef";
const BOB = "bob-key-0123456789abcdef";
const TOOLS = [
  "cortensor_completions",
  "cortensor_completions_v3",
  "cortensor_delegate",
  "cortensor_delegate_v2",
  "cortensor_delegate_v3",
  "cortensor_validate",
  "cortensor_validate_v2",
  "cortensor_validate_v3",
  "cortensor_factcheck",
  "cortensor_create_session",
  "cortensor_get_session",
  "cortensor_sessions",
  "cortensor_tasks",
  "cortensor_get_task",
  "cortensor_cancel_task",
  "cortensor_miners",
  "cortensor_status",
  "cortensor_info",
  "cortensor_about",
  "cortensor_ping",
];

let router: Router;
/** A second router with a per-key limit of 10 requests per 10 s (the last describe), started beside the first. */
let limited: Router;
let miner: Miner;
let alice: Client;
let bob: Client;
let sid = ""; // Alice's session, created through MCP
const called = new Set<string>();

async function connect(key: string | null, path = "/mcp"): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const headers: Record<string, string> = key ? { Authorization: `Bearer ${key}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(`${router.url}${path}`), { requestInit: { headers } });
  const client = new Client({ name: "mcp-it", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

type Structured = { [k: string]: any };
async function tool(client: Client, name: string, args: Record<string, unknown> = {}, opts = {}) {
  called.add(name);
  const res = (await client.callTool({ name, arguments: args }, undefined, { timeout: 120_000, ...opts })) as CallToolResult;
  return { ...res, sc: res.structuredContent as Structured, text: (res.content[0] as { text: string }).text };
}
const ok = async (client: Client, name: string, args: Record<string, unknown> = {}) => {
  const res = await tool(client, name, args);
  expect(res.isError, `${name}: ${res.text}`).toBeFalsy();
  expect(JSON.parse(res.text)).toEqual(res.sc); // the text block carries the same JSON
  return res.sc;
};
const asAlice = (path: string, init: { method?: string; body?: unknown } = {}) => api(router, path, { ...init, key: ALICE });

/** A raw JSON-RPC POST (for what the SDK client will not send). */
async function rawPost(key: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${router.url}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify(body),
  });
}
const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "raw", version: "1" } },
};

beforeAll(async () => {
  [router, limited] = await Promise.all([
    startRouter({ vars: { API_KEYS: `alice:${ALICE},bob:${BOB}` } }),
    startRouter({ rateLimits: { RATE_LIMIT_KEY: 10 } }),
  ]);
  // The built-in model writes hundreds of tokens in well under a second: each result of a task asking for 200
  // tokens or more (the cancel tests' 400) is held 1.5 s before its precommit so those tasks are still running
  // when cancelled; the short completions are answered at once.
  miner = await startMiner(router.url, {
    name: "mcp",
    concurrency: 2,
    args: ["--test-delay-ms", "1500"],
    env: { MINER_TEST_DELAY_MIN_TOKENS: "200" },
  });
  await miner.waitFor("ready", undefined, 120_000);
  ({ client: alice } = await connect(ALICE));
  ({ client: bob } = await connect(BOB));
}, 240_000);

afterAll(async () => {
  await Promise.all([alice?.close(), bob?.close()]);
  await miner?.stop("SIGKILL");
  await Promise.all([router?.stop(), limited?.stop()]);
});

describe("MCP over Streamable HTTP", () => {
  it("negotiates the newest protocol and lists every tool with its input schema", async () => {
    expect(alice.getServerVersion()?.name).toBeTruthy();
    const { tools } = await alice.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...TOOLS].sort());
    for (const t of tools) {
      expect(t.inputSchema.type).toBe("object");
      expect(t.inputSchema.properties).toHaveProperty("payment_proof");
      expect(t.outputSchema?.type).toBe("object");
    }
    const completion = tools.find((t) => t.name === "cortensor_completions")!;
    expect(Object.keys(completion.inputSchema.properties ?? {})).toEqual(expect.arrayContaining(["prompt", "max_tokens", "session_id"]));
    expect(completion.inputSchema.properties).not.toHaveProperty("stream");
    // The session's negotiated version: the SDK sends it on every request after initialize.
    const res = await rawPost(ALICE, INIT);
    expect(res.status).toBe(200);
    expect((await res.json()).result.protocolVersion).toBe(LATEST_PROTOCOL_VERSION);
    expect(res.headers.get("mcp-session-id")).toMatch(/^[0-9a-f-]{36}$/);
    // Older clients get their own version back; Cortensor's /messages alias serves the same endpoint.
    for (const version of ["2025-03-26", "2025-06-18"]) {
      const old = await rawPost(ALICE, { ...INIT, params: { ...INIT.params, protocolVersion: version } });
      expect((await old.json()).result.protocolVersion).toBe(version);
    }
    const alias = await fetch(`${router.url}/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify(INIT),
    });
    expect(alias.status).toBe(200);
    expect(alias.headers.get("mcp-session-id")).toBeTruthy();
  });

  it("creates a session that REST sees, and reads it back through tools and resources", async () => {
    const created = await ok(alice, "cortensor_create_session", { deposit: 1_000_000, redundancy: 1, name: "mcp-it", task_timeout: 60 });
    sid = created.id;
    expect((await api(router, `/api/v1/sessions/${sid}`, { key: BOB })).status).toBe(404); // Alice's own
    const rest = await asAlice(`/api/v1/sessions/${sid}`);
    expect(rest.status).toBe(200);
    expect(rest.body.config.name).toBe("mcp-it");
    await until(async () => (await asAlice(`/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= 1, 60_000);
    expect((await ok(alice, "cortensor_get_session", { session_id: sid })).config.name).toBe("mcp-it");
    const list = await ok(alice, "cortensor_sessions", { limit: 500 });
    expect(list.sessions.map((s: { id: string }) => s.id)).toContain(sid);
    const { resources } = await alice.listResources();
    expect(resources.map((r) => r.uri)).toContain(`session://${sid}`);
    const read = await alice.readResource({ uri: `session://${sid}` });
    expect(JSON.parse((read.contents[0] as { text: string }).text).config.name).toBe("mcp-it");
  });

  it("answers a completion with the text REST gives for the same prompt, and the task reads the same", async () => {
    const body = { prompt: "The network of small machines", max_tokens: 8, temperature: 0 };
    const rest = await asAlice(`/api/v1/completions/${sid}`, { body });
    expect(rest.status).toBe(200);
    const mcp = await ok(alice, "cortensor_completions", { ...body, session_id: sid });
    expect(mcp.choices[0].text).toBe(rest.body.choices[0].text);
    expect(mcp.session_id).toBe(sid);
    const v3 = await ok(alice, "cortensor_completions_v3", { ...body, session_id: sid, payload_policy: "offchain" });
    expect(v3.choices[0].text).toBe(rest.body.choices[0].text);

    const task = await ok(alice, "cortensor_get_task", { session_id: sid, task_id: mcp.task_id });
    expect(task.status).toBe("closed");
    expect(task.result.text).toBe(mcp.choices[0].text);
    const tasks = await ok(alice, "cortensor_tasks", { session_id: sid, limit: 10 });
    expect(tasks.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(expect.arrayContaining([mcp.task_id, v3.task_id]));
    const res = await alice.readResource({ uri: `task://${sid}/${mcp.task_id}` });
    expect(JSON.parse((res.contents[0] as { text: string }).text).result.text).toBe(mcp.choices[0].text);
  });

  it("streams progress notifications with the tokens so far", async () => {
    const seen: Progress[] = [];
    const res = await tool(
      alice,
      "cortensor_completions",
      { prompt: "Once upon a time", max_tokens: 16, session_id: sid },
      { onprogress: (p: Progress) => seen.push(p) },
    );
    expect(res.isError, res.text).toBeFalsy();
    expect(seen.length).toBeGreaterThanOrEqual(1);
    for (let i = 1; i < seen.length; i++) expect(seen[i].progress).toBeGreaterThan(seen[i - 1].progress);
    expect(seen.at(-1)!.progress).toBeLessThanOrEqual(res.sc.usage.completion_tokens);
    expect(res.sc.choices[0].text.startsWith(seen.map((p) => p.message).join(""))).toBe(true);
  });

  it("cancels the router task when the client aborts the tool call", async () => {
    const abort = new AbortController();
    let progressed!: () => void;
    const firstProgress = new Promise<void>((r) => (progressed = r));
    const call = tool(
      alice,
      "cortensor_completions",
      { prompt: "Tell a very long story about", max_tokens: 400, session_id: sid },
      {
        signal: abort.signal,
        onprogress: () => progressed(),
      },
    );
    await firstProgress;
    abort.abort("the user stopped it");
    await expect(call).rejects.toThrow();
    const task = await until(async () => {
      const list = await asAlice(`/api/v1/tasks/${sid}?limit=1`);
      const t = list.body.tasks[0];
      return t?.status === "failed" ? t : null;
    }, 30_000);
    expect(task.error.code).toBe("task_cancelled");
    expect(task.params.max_tokens).toBe(400);
  });

  it("cancels on a notifications/cancelled that races the call (before or after its task is known)", async () => {
    const init = await rawPost(ALICE, INIT);
    const v = { "mcp-session-id": init.headers.get("mcp-session-id")!, "mcp-protocol-version": LATEST_PROTOCOL_VERSION };
    const args = { prompt: "An endless list of rivers:", max_tokens: 400, session_id: sid };
    const call = rawPost(
      ALICE,
      { jsonrpc: "2.0", id: 77, method: "tools/call", params: { name: "cortensor_completions", arguments: args } },
      v,
    );
    const cancel = await rawPost(ALICE, { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 77 } }, v);
    expect(cancel.status).toBe(202);
    const answer = await (await call).json();
    expect(answer.result.isError).toBe(true);
    expect(answer.result.structuredContent.error.code).toBe("task_cancelled");
    const taskId = answer.result.structuredContent.error.details.task_id;
    expect((await asAlice(`/api/v1/tasks/${sid}/${taskId}`)).body.error.code).toBe("task_cancelled");
  });

  it("cancels a running task with cortensor_cancel_task", async () => {
    const res = await fetch(`${router.url}/api/v1/completions/${sid}`, {
      method: "POST",
      headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "A long tale of", max_tokens: 400, stream: true }),
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let head = "";
    while (!head.includes("\n\n")) head += (await reader.read()).value ?? "";
    const taskId = JSON.parse(head.split("\n\n")[0].replace(/^data: ?/, "")).task_id;
    const cancelled = await ok(alice, "cortensor_cancel_task", { session_id: sid, task_id: taskId });
    expect(cancelled.status).toBe("failed");
    expect(cancelled.error.code).toBe("task_cancelled");
    await reader.cancel();
    // A repeat answers the same; a task that ended otherwise cannot be cancelled.
    expect((await ok(alice, "cortensor_cancel_task", { session_id: sid, task_id: taskId })).error.code).toBe("task_cancelled");
    const finished = await ok(alice, "cortensor_completions", { prompt: "Short", max_tokens: 2, session_id: sid });
    const late = await tool(alice, "cortensor_cancel_task", { session_id: sid, task_id: finished.task_id });
    expect(late.isError).toBe(true);
    expect(late.sc.http_status).toBe(409);
    expect(late.sc.error.code).toBe("task_finished");
  });

  it("delegates, validates and fact-checks through every version", async () => {
    const pool = { replicas: 1, session_pool: [sid] };
    const d1 = await ok(alice, "cortensor_delegate", { session_id: sid, task_request_input: "Name a colour.", max_tokens: 6 });
    const d2 = await ok(alice, "cortensor_delegate_v2", { session_id: sid, objective: "Name a colour.", execution: { max_tokens: 6 } });
    const d3 = await ok(alice, "cortensor_delegate_v3", { objective: "Name a colour.", execution: { max_tokens: 6 }, consensus: pool });
    const v1 = await ok(alice, "cortensor_validate", { session_id: sid, task_request_input: "What is 2 + 2?", task_result_output: "4" });
    const v2 = await ok(alice, "cortensor_validate_v2", { session_id: sid, claim: "The sky is green." });
    const v3 = await ok(alice, "cortensor_validate_v3", { claim: "The sky is green.", consensus: pool });
    const fc = await ok(alice, "cortensor_factcheck", {
      session_id: sid,
      claim: "Water boils at 100 C at sea level.",
      mode: "realtime",
      documents: ["Water boils at 100 C at sea level."],
    });
    for (const r of [d1, d2, d3, v1, v2, v3, fc]) expect(r.status).toBe("ok");
    // The same body through REST answers the same (greedy decoding, one miner).
    const rest = await asAlice("/api/v1/delegate", { body: { session_id: sid, task_request_input: "Name a colour.", max_tokens: 6 } });
    expect(rest.status).toBe(200);
    expect(d1.output).toBe(rest.body.output);
    expect(d1.task_id).not.toBe(rest.body.task_id);
    for (const r of [d2, d3]) expect(typeof r.output).toBe("string");
    for (const r of [v1, v2, v3]) expect(r.verdict).toMatch(/^(VALID|INVALID|RETRY|NEEDS_SPEC)$/);
    expect(fc.verdict).toMatch(/^(SUPPORTED|REFUTED|UNVERIFIABLE)$/);
    expect(fc.grounding.source).toBe("request");
  });

  it("reads the network: miners, status, info, about, ping", async () => {
    const miners = await ok(alice, "cortensor_miners", {});
    expect(miners.nodes.map((n: { address: string }) => n.address.toLowerCase())).toContain(miner.address()!.toLowerCase());
    const status = await ok(alice, "cortensor_status", {});
    expect(status.connected_miners).toBe((await asAlice("/api/v1/status")).body.connected_miners);
    expect((await ok(alice, "cortensor_info", {})).name).toBe((await asAlice("/api/v1/info")).body.name);
    expect((await ok(alice, "cortensor_about", {})).api_versions).toEqual(["v1", "v2", "v3"]);
    expect((await ok(alice, "cortensor_ping", {})).status).toBe("ok");
  });

  it("offers prompts", async () => {
    const { prompts } = await alice.listPrompts();
    expect(prompts.map((p) => p.name).sort()).toEqual(["factcheck_claim", "second_opinion"]);
    const p = await alice.getPrompt({ name: "factcheck_claim", arguments: { claim: "Owls are birds." } });
    expect((p.messages[0].content as { text: string }).text).toContain("Owls are birds.");
  });
});

describe("MCP adversaries", () => {
  it("refuses a missing or unknown API key with 401 and a Bearer challenge", async () => {
    for (const key of [null, "not-a-key"]) {
      const err = await connect(key).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StreamableHTTPError);
      expect((err as StreamableHTTPError).code).toBe(401);
    }
    const res = await fetch(`${router.url}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(INIT),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await res.json()).error.code).toBe("unauthorized");
  });

  it("keeps tenants apart: Bob cannot read, list or cancel Alice's tasks", async () => {
    const done = await ok(alice, "cortensor_completions", { prompt: "Alice's secret plan", max_tokens: 4, session_id: sid });
    for (const [name, args] of [
      ["cortensor_get_task", { session_id: sid, task_id: done.task_id }],
      ["cortensor_tasks", { session_id: sid }],
      ["cortensor_get_session", { session_id: sid }],
      ["cortensor_cancel_task", { session_id: sid, task_id: done.task_id }],
      ["cortensor_completions", { prompt: "use Alice's session", max_tokens: 4, session_id: sid }],
    ] as const) {
      const res = await tool(bob, name, args);
      expect(res.isError, `${name}: ${res.text}`).toBe(true);
      expect(res.sc.error.code).toMatch(/^(session_not_found|task_not_found|not_found)$/);
      expect(res.text).not.toContain("secret plan");
    }
    await expect(bob.readResource({ uri: `task://${sid}/${done.task_id}` })).rejects.toThrow(/not_found/);
    expect((await bob.listResources()).resources.map((r) => r.uri)).not.toContain(`session://${sid}`);
    // Alice's task is untouched, and no task of Bob's landed in her session.
    const mine = await asAlice(`/api/v1/tasks/${sid}/${done.task_id}`);
    expect(mine.body.status).toBe("closed");
    expect((await asAlice(`/api/v1/tasks/${sid}?limit=1`)).body.tasks[0].task_id).toBe(done.task_id);
  });

  it("answers 404 to another owner's Mcp-Session-Id, 400 without one, and ends a session on DELETE", async () => {
    const init = await rawPost(ALICE, INIT);
    const session = init.headers.get("mcp-session-id")!;
    const list = { jsonrpc: "2.0", id: 2, method: "tools/list" };
    const v = { "mcp-session-id": session, "mcp-protocol-version": LATEST_PROTOCOL_VERSION };
    expect((await rawPost(ALICE, list, v)).status).toBe(200);
    expect((await rawPost(BOB, list, v)).status).toBe(404);
    expect((await rawPost(ALICE, list, { ...v, "mcp-session-id": crypto.randomUUID() })).status).toBe(404);
    expect((await rawPost(ALICE, list, { "mcp-protocol-version": LATEST_PROTOCOL_VERSION })).status).toBe(400);
    // Bob cannot end it either.
    const del = (key: string) => fetch(`${router.url}/mcp`, { method: "DELETE", headers: { authorization: `Bearer ${key}`, ...v } });
    expect((await del(BOB)).status).toBe(404);
    expect((await del(ALICE)).status).toBe(200);
    expect((await rawPost(ALICE, list, v)).status).toBe(404);
    // Bob's notifications/cancelled cannot reach Alice's session either: it is refused before anything runs.
    const cancel = { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 1 } };
    expect((await rawPost(BOB, cancel, v)).status).toBe(404);
  });

  it("rejects bad arguments and creates nothing", async () => {
    const before = (await asAlice(`/api/v1/tasks/${sid}?limit=500`)).body.count;
    const sessionsBefore = (await asAlice("/api/v1/sessions?limit=500")).body.count;
    const bad = await tool(alice, "cortensor_completions", { prompt: "", max_tokens: 0, session_id: sid });
    expect(bad.isError).toBe(true);
    expect(bad.text).toMatch(/Input validation error/);
    const noDeposit = await tool(alice, "cortensor_create_session", { name: "x" });
    expect(noDeposit.isError).toBe(true);
    // A superRefine of the REST schema (dedicated sessions list their miners) holds through MCP too.
    const dedicated = await tool(alice, "cortensor_create_session", { deposit: 1, mode: "dedicated" });
    expect(dedicated.isError).toBe(true);
    const unknown = await tool(alice, "cortensor_no_such_tool", {});
    expect(unknown.isError).toBe(true);
    expect((await asAlice(`/api/v1/tasks/${sid}?limit=500`)).body.count).toBe(before);
    expect((await asAlice("/api/v1/sessions?limit=500")).body.count).toBe(sessionsBefore);
    // Not JSON at all: a JSON-RPC parse error.
    const garbage = await fetch(`${router.url}/mcp`, {
      method: "POST",
      headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: "{not json",
    });
    expect(garbage.status).toBe(400);
    expect((await garbage.json()).error.code).toBe(-32700);
  });

  it("answers JSON to a JSON-only client and SSE to a progress request, and 405 to GET", async () => {
    const init = await rawPost(ALICE, INIT, { accept: "application/json" });
    expect(init.status).toBe(200);
    expect(init.headers.get("content-type")).toMatch(/^application\/json/);
    const v = { "mcp-session-id": init.headers.get("mcp-session-id")!, "mcp-protocol-version": LATEST_PROTOCOL_VERSION };
    const ping = { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "cortensor_ping", arguments: {} } };
    const json = await rawPost(ALICE, ping, { ...v, accept: "application/json" });
    expect(json.headers.get("content-type")).toMatch(/^application\/json/);
    expect((await json.json()).result.structuredContent.status).toBe("ok");
    const call = {
      jsonrpc: "2.0",
      id: 4,
      method: "tools/call",
      params: {
        name: "cortensor_completions",
        arguments: { prompt: "Hello", max_tokens: 4, session_id: sid },
        _meta: { progressToken: "p" },
      },
    };
    const sse = await rawPost(ALICE, call, v);
    expect(sse.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const frames = (await sse.text()).split("\n").filter((l) => l.startsWith("data: "));
    const msgs = frames.map((l) => JSON.parse(l.slice(6)));
    expect(msgs.some((m) => m.method === "notifications/progress" && m.params.progressToken === "p")).toBe(true);
    expect(msgs.at(-1).result.structuredContent.choices[0].text.length).toBeGreaterThan(0);
    const get = await fetch(`${router.url}/mcp`, { headers: { authorization: `Bearer ${ALICE}`, accept: "text/event-stream", ...v } });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toContain("POST");
  });

  it("serves Cortensor's /mcp/messages path and checks every tool was called", async () => {
    const { client } = await connect(ALICE, "/mcp/messages");
    expect((await ok(client, "cortensor_ping")).status).toBe("ok");
    await client.close();
    expect(TOOLS.filter((t) => !called.has(t))).toEqual([]);
  });
});

describe("MCP and the per-key rate limit", () => {
  it("counts a tool call once, not once for MCP and once for its REST call", async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${limited.url}/mcp`), {
      requestInit: { headers: { Authorization: "Bearer dev-key" } },
    });
    const client = new Client({ name: "rl", version: "1" });
    await client.connect(transport); // initialize, notifications/initialized, GET: 3 requests
    // 6 tool calls: 9 requests in all fit a limit of 10; counted twice they would be 15.
    for (let i = 0; i < 6; i++) {
      const res = (await client.callTool({ name: "cortensor_ping", arguments: {} })) as CallToolResult;
      expect(res.isError, JSON.stringify(res.content)).toBeFalsy();
    }
    // The limit still holds: more calls soon answer 429 (as a JSON-RPC transport error or a tool error).
    let refused = false;
    for (let i = 0; i < 14 && !refused; i++) {
      const res = await client.callTool({ name: "cortensor_ping", arguments: {} }).catch((e: unknown) => e);
      refused = res instanceof StreamableHTTPError ? res.code === 429 : (res as CallToolResult).isError === true;
    }
    expect(refused).toBe(true);
    await client.close().catch(() => {});
  });
});
