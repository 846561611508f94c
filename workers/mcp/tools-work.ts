import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { CreateSessionBody } from "../lib/schemas.ts";
import { DelegateV1, DelegateV2, DelegateV3, Factcheck, ValidateV1, ValidateV2, ValidateV3 } from "../lib/work-schemas.ts";
import { registerRestTool, withPayment } from "./rest-tool.ts";

// Work tools: delegate and validate (one tool per API version: their bodies differ, and an MCP input schema must
// be one object, not a union), factcheck, and session creation. Each is one POST to its REST route.

const WORK = { annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: false } };

/** What delegate / validate / factcheck answer (lib/work.ts): the verdict or output plus the task(s) behind it. */
const WORK_OUTPUT = {
  status: z.string(),
  consensus: z.record(z.string(), z.unknown()),
  replicas: z.array(z.unknown()),
};

const VERSIONS = [
  { v: 1, delegate: DelegateV1, validate: ValidateV1, note: "v1 (Cortensor's delegate_v1 / validate_v1 body)" },
  { v: 2, delegate: DelegateV2, validate: ValidateV2, note: "v2 (objective / claim with structured input and policy)" },
  { v: 3, delegate: DelegateV3, validate: ValidateV3, note: "v3 (v2 plus redundant replicas and a consensus strategy)" },
] as const;

const suffix = (v: number) => (v === 1 ? "" : `_v${v}`);

export function registerWorkTools(server: McpServer, c: Context<AppEnv>): void {
  for (const { v, delegate, validate, note } of VERSIONS) {
    registerRestTool(server, c, {
      name: `cortensor_delegate${suffix(v)}`,
      title: `Delegate a task (v${v})`,
      description: `POST /api/v${v}/delegate: hand a task to the network's miners and get their output, ${note}.`,
      input: withPayment(delegate as z.ZodObject),
      output: WORK_OUTPUT,
      ...WORK,
      request: (body) => ({ method: "POST", path: `/api/v${v}/delegate`, body }),
    });
    registerRestTool(server, c, {
      name: `cortensor_validate${suffix(v)}`,
      title: `Validate a result (v${v})`,
      description: `POST /api/v${v}/validate: have miners judge a claim or a task's result, ${note}.`,
      input: withPayment(validate as z.ZodObject),
      output: WORK_OUTPUT,
      ...WORK,
      request: (body) => ({ method: "POST", path: `/api/v${v}/validate`, body }),
    });
  }
  registerRestTool(server, c, {
    name: "cortensor_factcheck",
    title: "Fact-check a claim",
    description: "POST /api/v1/factcheck: check a claim against grounding documents (given, or from the configured retriever).",
    input: withPayment(Factcheck),
    output: WORK_OUTPUT,
    ...WORK,
    request: (body) => ({ method: "POST", path: "/api/v1/factcheck", body }),
  });
  registerRestTool(server, c, {
    name: "cortensor_create_session",
    title: "Create a session",
    description: "POST /api/v1/sessions: a session owned by the caller's API key, with its deposit, redundancy and consensus.",
    input: withPayment(CreateSessionBody),
    output: { id: z.string(), config: z.record(z.string(), z.unknown()) },
    ...WORK,
    request: (body) => ({ method: "POST", path: "/api/v1/sessions", body }),
  });
}
