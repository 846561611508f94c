import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult, ServerNotification } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import { z } from "zod";
import { ERROR_STATUS, type ErrorCode } from "../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { OffchainCompletionBody } from "../lib/offchain-completion.ts";
import { callRest, sseData } from "../lib/rest-call.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { restArgs, seg, withPayment } from "./rest-tool.ts";
import { errorResult, okResult, outputOf, restResult } from "./result.ts";

// The completion tools always ask the REST route for a stream (`stream: true`), whatever the client wants: the
// first chunk names the router task (so a cancelled MCP request can cancel it), and the tokens so far go to the
// client as progress notifications when it sent a progressToken. The tool's result is the whole completion.

/** A router task, as the first streamed chunk names it. */
export interface TaskRef {
  session_id: string;
  task_id: string;
}

/** Per-transport hooks for cancellation across requests (see server.ts). */
export interface TaskHooks {
  onTask?: (requestId: string, task: TaskRef) => Promise<boolean>;
  onTaskEnd?: (requestId: string) => Promise<void>;
}

/** The slice of the SDK's handler `extra` the completion uses. */
export interface CallExtra {
  signal: AbortSignal;
  requestId: string | number;
  _meta?: { progressToken?: string | number };
  sendNotification: (n: ServerNotification) => Promise<void>;
}

/** Progress notifications at most this often (the first token always goes at once). */
const PROGRESS_EVERY_MS = 100;
/** Belt and braces over the REST route's own deadlines (at most 300 s): a stream silent this long is given up. */
const STREAM_IDLE_MS = 330_000;

interface Chunk {
  task_id: string;
  session_id: string;
  choices: { text: string; finish_reason: string | null }[];
  error?: { code: string; message: string; details?: unknown };
  request_id?: string | null;
}

export const cancelPath = (t: TaskRef) => `/api/v1/tasks/${seg(t.session_id)}/${seg(t.task_id)}/cancel`;

/** Cancels a router task as the caller; failures (already finished, unknown) are the route's answer, ignored here. */
export async function cancelTask(c: Context<AppEnv>, task: TaskRef): Promise<number> {
  const res = await callRest(c, { method: "POST", path: cancelPath(task) });
  await res.body?.cancel();
  return res.status;
}

/** Next item of an iterator, or `timeout` when none came in `ms`. */
async function nextWithin<T>(it: AsyncIterator<T>, ms: number): Promise<IteratorResult<T> | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
  try {
    return await Promise.race([it.next(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Cancellation of one tool call's task: wanted before the task is known, carried out once it is. */
function canceller(c: Context<AppEnv>) {
  let task: TaskRef | null = null;
  let wanted = false;
  let done = false;
  const fire = async () => {
    if (!task || done) return;
    done = true;
    await cancelTask(c, task).catch(() => {});
  };
  return {
    want: () => {
      wanted = true;
      return fire();
    },
    know: (t: TaskRef) => {
      task = t;
      return wanted ? fire() : Promise.resolve();
    },
  };
}

function progressSender(extra: CallExtra, total: number) {
  const token = extra._meta?.progressToken;
  let last = 0;
  let pending = "";
  return async (tokens: number, piece: string, force = false) => {
    if (token === undefined) return;
    pending += piece;
    const now = Date.now();
    if (!force && last !== 0 && now - last < PROGRESS_EVERY_MS) return;
    if (!pending) return;
    last = now;
    const message = pending;
    pending = "";
    await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: tokens, total, message } });
  };
}

/** Reads the REST stream into one completion, sending progress and honouring cancellation. */
export async function readCompletionStream(
  c: Context<AppEnv>,
  res: Response,
  extra: CallExtra,
  hooks: TaskHooks,
  total: number,
): Promise<CallToolResult> {
  const requestId = JSON.stringify(extra.requestId);
  const cancel = canceller(c);
  const onAbort = () => void cancel.want();
  extra.signal.addEventListener("abort", onAbort, { once: true });
  if (extra.signal.aborted) onAbort();
  const progress = progressSender(extra, total);
  const it = sseData(res)[Symbol.asyncIterator]();
  let first: Chunk | null = null;
  let final: Chunk | null = null;
  let text = "";
  let tokens = 0;
  try {
    for (;;) {
      const next = await nextWithin(it, STREAM_IDLE_MS);
      if (next === "timeout" || next.done) break;
      const chunk = next.value as Chunk;
      if (chunk.error) return streamError(chunk, first, text);
      if (!first) {
        first = chunk;
        const task = { session_id: chunk.session_id, task_id: chunk.task_id };
        if (hooks.onTask && (await hooks.onTask(requestId, task).catch(() => false))) void cancel.want();
        await cancel.know(task);
      }
      const piece = chunk.choices[0]?.text ?? "";
      text += piece;
      if (piece) tokens++;
      if (chunk.choices[0]?.finish_reason) final = chunk;
      else await progress(tokens, piece);
    }
  } finally {
    extra.signal.removeEventListener("abort", onAbort);
    if (first && hooks.onTaskEnd) await hooks.onTaskEnd(requestId).catch(() => {});
  }
  if (!final) {
    const where = first ? { task_id: first.task_id, session_id: first.session_id } : {};
    return errorResult(502, {
      code: "task_failed",
      message: "the completion stream ended without a final chunk",
      details: { ...where, partial_text: text },
    });
  }
  return okResult({ ...final, choices: [{ ...final.choices[0], text, index: 0 }] });
}

function streamError(chunk: Chunk, first: Chunk | null, text: string): CallToolResult {
  const err = chunk.error!;
  const status = ERROR_STATUS[err.code as ErrorCode] ?? 502;
  const details = err.details ?? (first ? { task_id: first.task_id, session_id: first.session_id } : null);
  return errorResult(
    status,
    { code: err.code, message: err.message, details: { ...(details as object), partial_text: text } },
    chunk.request_id ?? undefined,
  );
}

const COMPLETION_OUTPUT = {
  id: z.string(),
  model: z.string(),
  choices: z.array(z.object({ text: z.string(), index: z.number(), finish_reason: z.string().nullable() }).loose()),
  usage: z.record(z.string(), z.unknown()),
  task_id: z.string(),
  session_id: z.string(),
};

const TOOLS = [
  {
    name: "cortensor_completions",
    title: "Completion (v1)",
    path: "/api/v1/completions",
    input: withPayment(CompletionBody.omit({ stream: true })),
    description: "POST /api/v1/completions: a text completion from the network's miners (inline prompt up to 256 KiB).",
  },
  {
    name: "cortensor_completions_v3",
    title: "Completion (v3: off-chain and private payloads)",
    path: "/api/v3/completions",
    input: withPayment(OffchainCompletionBody.omit({ stream: true })),
    description:
      "POST /api/v3/completions: v1's fields plus `private` (encrypted prompt and result), `payload_policy` and `result_policy` (off-chain payloads in R2). A private completion sends no progress.",
  },
] as const;

export function registerCompletionTools(server: McpServer, c: Context<AppEnv>, hooks: TaskHooks): void {
  for (const tool of TOOLS) {
    const handler = async (args: z.output<typeof tool.input>, extra: CallExtra): Promise<CallToolResult> => {
      const { body, payment } = restArgs(args, extra as { _meta?: Record<string, unknown> });
      const res = await callRest(c, { method: "POST", path: tool.path, body: { ...body, stream: true }, payment });
      if (!res.ok || !res.headers.get("content-type")?.startsWith("text/event-stream")) return restResult(res);
      return readCompletionStream(c, res, extra, hooks, body.max_tokens);
    };
    server.registerTool(
      tool.name,
      {
        title: tool.title,
        description: `${tool.description} Progress notifications carry the tokens so far (progress = tokens, message = the new text); cancelling the request cancels the router task.`,
        inputSchema: tool.input,
        outputSchema: outputOf(COMPLETION_OUTPUT),
        annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: false },
      },
      handler as never,
    );
  }
}
