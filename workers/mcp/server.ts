import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { CfWorkerJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/cfworker";
import type { Context } from "hono";
import { type AppEnv, VERSION } from "../env.ts";
import { registerCompletionTools, type TaskHooks } from "./completion.ts";
import { registerPrompts } from "./prompts.ts";
import { registerResources } from "./resources.ts";
import { registerReadTools } from "./tools-read.ts";
import { registerWorkTools } from "./tools-work.ts";

export type { TaskHooks, TaskRef } from "./completion.ts";

/**
 * Options of a server. A transport whose server lives as long as its MCP session sees `notifications/cancelled`
 * on the same server, which aborts the tool call's `extra.signal`; the completion tools then cancel their router
 * task by themselves and need no hooks. A transport with a fresh server per HTTP request (Streamable HTTP in a
 * Worker) passes hooks that record each streamed call's task where a later request's cancel can find it.
 */
export type McpServerOptions = TaskHooks;

/**
 * A fresh MCP server for one authenticated request `c` (Authorization forwarded on every REST call): every tool,
 * resource and prompt of the router. Cheap to build; connect it to any transport.
 */
export function mcpServer(c: Context<AppEnv>, opts: McpServerOptions = {}): McpServer {
  const server = new McpServer(
    { name: c.env.ROUTER_NAME || "router", title: "Cortensor-compatible inference router", version: VERSION },
    {
      // The SDK's default validator (ajv) compiles with `new Function`, which workerd forbids.
      jsonSchemaValidator: new CfWorkerJsonSchemaValidator(),
      capabilities: { tools: {}, resources: {}, prompts: {} },
      instructions:
        "Tools are the router's REST routes (cortensor_<route>): completions, delegate, validate, factcheck, sessions, tasks, miners, status. Errors carry the router's error code.",
    },
  );
  registerCompletionTools(server, c, opts);
  registerWorkTools(server, c);
  registerReadTools(server, c);
  registerResources(server, c);
  registerPrompts(server);
  return server;
}
