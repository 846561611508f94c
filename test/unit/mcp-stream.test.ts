import type { CallToolResult, ServerNotification } from "@modelcontextprotocol/sdk/types.js";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { AppEnv } from "../../workers/env.ts";
import { type CallExtra, readCompletionStream, type TaskHooks } from "../../workers/mcp/completion.ts";

// The completion tools' stream reader (workers/mcp/completion.ts) on REST streams made up here: the end of the
// stream with or without its final chunk, an error chunk, progress notifications, and cancellation arriving
// before and after the task is known. The REST fetch is a recorder, so a cancel shows as the request it makes.

const chunk = (text: string, finish: string | null = null, extra: object = {}) =>
  `data: ${JSON.stringify({ id: "c", task_id: "7", session_id: "s1", model: "m", choices: [{ text, index: 0, finish_reason: finish }], ...extra })}\n\n`;

/** An SSE response whose frames come `gapMs` apart. */
function sse(frames: string[], gapMs = 0): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async start(ctrl) {
      for (const f of frames) {
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
        ctrl.enqueue(enc.encode(f));
      }
      ctrl.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

interface Run {
  result: CallToolResult;
  notes: ServerNotification[];
  restCalls: string[];
}

/** Runs the reader inside a real Hono context whose in-process REST fetch records what it is asked. */
async function run(res: Response, opts: { hooks?: TaskHooks; progress?: boolean; abort?: AbortController } = {}): Promise<Run> {
  const notes: ServerNotification[] = [];
  const restCalls: string[] = [];
  let result!: CallToolResult;
  const app = new Hono<AppEnv>();
  app.use((c, next) => {
    c.set("restFetch", (req) => {
      restCalls.push(`${req.method} ${new URL(req.url).pathname}`);
      return Response.json({ ok: true });
    });
    return next();
  });
  app.post("/", async (c) => {
    const extra: CallExtra = {
      signal: (opts.abort ?? new AbortController()).signal,
      requestId: 5,
      _meta: opts.progress ? { progressToken: "tok" } : undefined,
      sendNotification: async (n) => void notes.push(n),
    };
    result = await readCompletionStream(c, res, extra, opts.hooks ?? {}, 16);
    return c.text("done");
  });
  expect((await app.request("/", { method: "POST" })).status).toBe(200);
  return { result, notes, restCalls };
}

const sc = (r: CallToolResult) => r.structuredContent as Record<string, any>;

describe("the MCP completion stream reader", () => {
  it("joins the tokens into one completion and sends increasing progress", async () => {
    const frames = [
      chunk("Hello"),
      chunk(" wide"),
      chunk(" world"),
      chunk("", "stop", { usage: { completion_tokens: 3 } }),
      "data: [DONE]\n\n",
    ];
    const { result, notes } = await run(sse(frames, 120), { progress: true });
    expect(result.isError).toBeFalsy();
    expect(sc(result).choices[0]).toMatchObject({ text: "Hello wide world", finish_reason: "stop" });
    expect(sc(result).usage).toEqual({ completion_tokens: 3 });
    const progress = notes.map((n) => n.params as { progress: number; message: string; progressToken: string });
    expect(progress.map((p) => p.progress)).toEqual([1, 2, 3]);
    expect(progress.map((p) => p.message).join("")).toBe("Hello wide world");
    expect(progress.every((p) => p.progressToken === "tok")).toBe(true);
  });

  it("sends no progress without a progress token, and throttles it with one", async () => {
    const frames = [...Array.from({ length: 20 }, (_, i) => chunk(`t${i} `)), chunk("", "length"), "data: [DONE]\n\n"];
    expect((await run(sse(frames))).notes).toHaveLength(0);
    const { notes, result } = await run(sse(frames), { progress: true });
    expect(notes.length).toBeGreaterThanOrEqual(1);
    expect(notes.length).toBeLessThan(20); // 20 tokens at once: not one notification each
    expect(sc(result).choices[0].text.split(" ").length).toBe(21);
  });

  it("yields an error result when the stream ends without its final chunk", async () => {
    const { result } = await run(sse([chunk("partial"), chunk(" text")]));
    expect(result.isError).toBe(true);
    expect(sc(result).error).toMatchObject({
      code: "task_failed",
      details: { task_id: "7", session_id: "s1", partial_text: "partial text" },
    });
  });

  it("passes the router's error chunk on with its code and status", async () => {
    const error = `data: ${JSON.stringify({ request_id: "r1", error: { code: "timeout", message: "too slow", details: { task_id: "7" } } })}\n\n`;
    const { result } = await run(sse([chunk("a"), error, "data: [DONE]\n\n"]));
    expect(result.isError).toBe(true);
    expect(sc(result)).toMatchObject({ http_status: 504, request_id: "r1", error: { code: "timeout", message: "too slow" } });
    expect((result.content[0] as { text: string }).text).toMatch(/^timeout: too slow/);
  });

  it("records the task with the hooks, and cancels it when a cancel came first", async () => {
    const tracked: string[] = [];
    const hooks: TaskHooks = {
      onTask: async (id, t) => {
        tracked.push(`track ${id} ${t.session_id}/${t.task_id}`);
        return true; // a cancel for this request came first
      },
      onTaskEnd: async (id) => void tracked.push(`untrack ${id}`),
    };
    const { restCalls } = await run(sse([chunk("a"), chunk("", "stop"), "data: [DONE]\n\n"]), { hooks });
    expect(tracked).toEqual(["track 5 s1/7", "untrack 5"]);
    expect(restCalls).toEqual(["POST /api/v1/tasks/s1/7/cancel"]);
    const quiet = await run(sse([chunk("a"), chunk("", "stop"), "data: [DONE]\n\n"]), { hooks: { onTask: async () => false } });
    expect(quiet.restCalls).toEqual([]);
  });

  it("cancels the task once when the request's signal aborts, before or after the task is known", async () => {
    const early = new AbortController();
    early.abort();
    const before = await run(sse([chunk("a"), chunk("", "stop"), "data: [DONE]\n\n"]), { abort: early });
    expect(before.restCalls).toEqual(["POST /api/v1/tasks/s1/7/cancel"]);
    const late = new AbortController();
    setTimeout(() => late.abort(), 150);
    const after = await run(sse([chunk("a"), chunk("b"), chunk("c"), chunk("", "stop"), "data: [DONE]\n\n"], 100), { abort: late });
    expect(after.restCalls).toEqual(["POST /api/v1/tasks/s1/7/cancel"]);
  });
});
