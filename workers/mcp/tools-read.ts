import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { ListQuery, PageQuery, SessionParam, TaskParam } from "../lib/schemas.ts";
import { registerRestTool, seg, withPayment } from "./rest-tool.ts";

// Reads (sessions, tasks, miners, network state) and task cancellation: one REST request each, as the caller,
// so another owner's session or task reads as unknown exactly as on REST. Path parameters are the REST route's
// own param schemas under snake_case names.

const READ = { annotations: { readOnlyHint: true, openWorldHint: false } };
const SessionArg = z.object({ session_id: SessionParam.shape.sessionId });
const TaskArg = z.object({ session_id: TaskParam.shape.sessionId, task_id: TaskParam.shape.taskId });
const None = z.object({});

const TASK_OUTPUT = { task_id: z.string(), session_id: z.string(), status: z.string(), result: z.unknown() };
const SESSION_OUTPUT = { id: z.string(), config: z.record(z.string(), z.unknown()), usage: z.unknown() };

function registerSessionTools(server: McpServer, c: Context<AppEnv>): void {
  registerRestTool(server, c, {
    name: "cortensor_sessions",
    title: "List sessions",
    description: "GET /api/v1/sessions: the caller's sessions and the shared ones, newest first, a page at a time.",
    input: withPayment(PageQuery),
    output: { count: z.number(), sessions: z.array(z.unknown()), next_before: z.string().nullable() },
    ...READ,
    request: (q) => ({ method: "GET", path: "/api/v1/sessions", query: q }),
  });
  registerRestTool(server, c, {
    name: "cortensor_get_session",
    title: "Get a session",
    description: "GET /api/v1/sessions/{session_id}: a session's configuration and usage.",
    input: withPayment(SessionArg),
    output: SESSION_OUTPUT,
    ...READ,
    request: (a) => ({ method: "GET", path: `/api/v1/sessions/${seg(a.session_id)}` }),
  });
  registerRestTool(server, c, {
    name: "cortensor_tasks",
    title: "List a session's tasks",
    description: "GET /api/v1/tasks/{session_id}: the session's tasks the caller may see, newest first, a page at a time.",
    input: withPayment(SessionArg.extend(ListQuery.shape)),
    output: { session_id: z.string(), count: z.number(), tasks: z.array(z.unknown()) },
    ...READ,
    request: ({ session_id, ...q }) => ({ method: "GET", path: `/api/v1/tasks/${seg(session_id)}`, query: q }),
  });
  registerRestTool(server, c, {
    name: "cortensor_get_task",
    title: "Get a task",
    description: "GET /api/v1/tasks/{session_id}/{task_id}: a task's state, result, replicas and consensus.",
    input: withPayment(TaskArg),
    output: TASK_OUTPUT,
    ...READ,
    request: (a) => ({ method: "GET", path: `/api/v1/tasks/${seg(a.session_id)}/${seg(a.task_id)}` }),
  });
  registerRestTool(server, c, {
    name: "cortensor_cancel_task",
    title: "Cancel a task",
    description: "POST /api/v1/tasks/{session_id}/{task_id}/cancel: end the caller's own unfinished task (error task_cancelled).",
    input: withPayment(TaskArg),
    output: TASK_OUTPUT,
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    request: (a) => ({ method: "POST", path: `/api/v1/tasks/${seg(a.session_id)}/${seg(a.task_id)}/cancel` }),
  });
}

function registerNetworkTools(server: McpServer, c: Context<AppEnv>): void {
  registerRestTool(server, c, {
    name: "cortensor_miners",
    title: "List miners",
    description: "GET /api/v1/miners: registered miners, newest first, a page at a time, with network-wide stats.",
    input: withPayment(PageQuery),
    output: { nodes: z.array(z.unknown()), stats: z.record(z.string(), z.unknown()), next_before: z.string().nullable() },
    ...READ,
    request: (q) => ({ method: "GET", path: "/api/v1/miners", query: q }),
  });
  const plain = [
    [
      "cortensor_status",
      "Network status",
      "/api/v1/status",
      "connected miners, active sessions, the block clock",
      { connected_miners: z.number() },
    ],
    [
      "cortensor_info",
      "Router info",
      "/api/v1/info",
      "the router's name, version and node counts",
      { name: z.string(), version: z.string() },
    ],
    [
      "cortensor_about",
      "About the router",
      "/api/v1/about",
      "what this router is, its API versions and default model",
      { name: z.string() },
    ],
    ["cortensor_ping", "Ping", "/api/v1/ping", 'liveness: `{status: "ok", time}`', { status: z.string(), time: z.number() }],
  ] as const;
  for (const [name, title, path, what, output] of plain) {
    registerRestTool(server, c, {
      name,
      title,
      description: `GET ${path}: ${what}.`,
      input: withPayment(None),
      output,
      ...READ,
      request: () => ({ method: "GET", path }),
    });
  }
}

export function registerReadTools(server: McpServer, c: Context<AppEnv>): void {
  registerSessionTools(server, c);
  registerNetworkTools(server, c);
}
