import { type McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import { McpError, type ReadResourceResult } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { restJson } from "../lib/rest-call.ts";
import { seg } from "./rest-tool.ts";
import { errorOf } from "./result.ts";

// Sessions and tasks as resources, read through the REST GET routes as the caller (another owner's session or
// task is unknown, as on REST). Listing is one bounded page: the newest sessions, a session's newest tasks.

/** Resources listed per list call (REST pages go up to 500; a client's resource picker needs far fewer). */
const LIST_PAGE = 50;
/** JSON-RPC error code for an unknown resource (MCP spec, resources). */
const RESOURCE_NOT_FOUND = -32002;

const one = (v: string | string[]) => (Array.isArray(v) ? v[0] : v);

async function readJson(c: Context<AppEnv>, uri: URL, path: string, query?: Record<string, number>): Promise<ReadResourceResult> {
  const { status, body } = await restJson(c, { method: "GET", path, query });
  if (status !== 200) {
    const { error } = errorOf(status, body);
    throw new McpError(status === 404 ? RESOURCE_NOT_FOUND : -32603, `${error.code}: ${error.message}`, error);
  }
  return { contents: [{ uri: uri.href, mimeType: "application/json", text: JSON.stringify(body) }] };
}

async function listSessions(c: Context<AppEnv>) {
  const { status, body } = await restJson(c, { method: "GET", path: "/api/v1/sessions", query: { limit: LIST_PAGE } });
  const sessions = status === 200 ? (body as { sessions: { id: string; name?: string }[] }).sessions : [];
  return {
    resources: sessions.map((s) => ({ uri: `session://${s.id}`, name: s.name || s.id, mimeType: "application/json" })),
  };
}

export function registerResources(server: McpServer, c: Context<AppEnv>): void {
  server.registerResource(
    "session",
    new ResourceTemplate("session://{session_id}", { list: () => listSessions(c) }),
    { title: "Session", description: "A session's configuration and usage (GET /api/v1/sessions/{id})", mimeType: "application/json" },
    (uri, v) => readJson(c, uri, `/api/v1/sessions/${seg(one(v.session_id))}`),
  );
  server.registerResource(
    "session-tasks",
    new ResourceTemplate("session://{session_id}/tasks", { list: undefined }),
    { title: "Session tasks", description: `A session's newest ${LIST_PAGE} tasks (GET /api/v1/tasks/{id})`, mimeType: "application/json" },
    (uri, v) => readJson(c, uri, `/api/v1/tasks/${seg(one(v.session_id))}`, { limit: LIST_PAGE }),
  );
  server.registerResource(
    "task",
    new ResourceTemplate("task://{session_id}/{task_id}", { list: undefined }),
    { title: "Task", description: "A task's state, result and replicas (GET /api/v1/tasks/{session}/{id})", mimeType: "application/json" },
    (uri, v) => readJson(c, uri, `/api/v1/tasks/${seg(one(v.session_id))}/${seg(one(v.task_id))}`),
  );
}
