import { Hono } from "hono";
import type { RouterRoute } from "hono/types";
import { generateSpecs, resolver } from "hono-openapi";
import type { z } from "zod";
import { VERSION } from "../env.ts";
import { type Auth, authOf, BODIES, FAMILIES, familyOf } from "./families.ts";
import { ErrorEnvelope, OpenAIErrorEnvelope } from "./schemas.ts";
import { SUMMARIES } from "./summaries.ts";

// The OpenAPI 3.1 document of the router, generated from the Hono app itself: every route it registered (hono-openapi
// walks `app.routes`), each validated body, query and path with the zod schema its validator runs
// (lib/request-validation.ts), then the families' tags and auth (families.ts) and the error envelopes.

type Method = "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace";
type Json = Record<string, unknown>;
/** An operation, as loosely as the post-processing here needs it (hono-openapi types it as OpenAPI 3.0/3.1 mixed). */
export interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { in?: string; name?: string; $ref?: string; schema?: Json; required?: boolean }[];
  requestBody?: { required?: boolean; content: Record<string, { schema?: Json }> };
  responses?: Record<string, { description?: string; $ref?: string }>;
}
export interface Document {
  openapi: string;
  info: Json;
  tags?: { name: string; description?: string }[];
  paths: Record<string, Partial<Record<Method, Operation>>>;
  components?: { schemas?: Json; parameters?: Json; [k: string]: unknown };
  servers?: { url: string }[];
}
const METHODS: Method[] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** A schema as hono-openapi writes it (the same conversion its validator middleware uses). */
async function openApiSchema(schema: z.ZodType, components: Json): Promise<Json> {
  const out = await resolver(schema).toOpenAPISchema();
  Object.assign(components, out.components?.schemas ?? {});
  return out.schema as Json;
}

/**
 * The routes as hono-openapi reads them, a trailing optional parameter (`/:sessionId?`, which Hono serves with and
 * without) split into both paths: an OpenAPI path parameter is always required.
 */
export function documentedRoutes(routes: readonly RouterRoute[]): RouterRoute[] {
  return routes.flatMap((r) => {
    const m = /^(.*)\/:[^/]+\?$/.exec(r.path);
    return m
      ? [
          { ...r, path: m[1] || "/" },
          { ...r, path: r.path.slice(0, -1) },
        ]
      : [r];
  });
}

const SECURITY: Record<Auth, Record<string, string[]>[]> = {
  public: [],
  api_key: [{ apiKey: [] }],
  api_key_or_miner: [{ apiKey: [] }, { minerToken: [] }],
  miner_token: [{ minerToken: [] }],
  admin: [{ adminSecret: [] }],
};

const SECURITY_SCHEMES = {
  apiKey: {
    type: "http",
    scheme: "bearer",
    description: "An API key: a managed key (/api/v1/keys, /admin/keys) or a static API_KEYS entry.",
  },
  minerToken: { type: "http", scheme: "bearer", description: "A miner token from POST /api/v1/miners/register." },
  adminSecret: { type: "http", scheme: "bearer", description: "The router's ADMIN_SECRET." },
} as const;

/** The error answers every operation may give, as `components.responses` (`OpenAI…` under /openai/v1). */
const ERROR_RESPONSES = {
  InvalidRequest: "Invalid request: the failing fields are in the details (OpenAI: `param`)",
  Unauthorized: "Missing, unknown, revoked or expired credentials",
  RateLimited: "Rate limited: retry after the Retry-After header's seconds",
  Error: "Any other failure: the code says which (shared/errors.ts)",
};
type ErrorResponse = keyof typeof ERROR_RESPONSES;

function errorResponses(): Json {
  const out: Json = {};
  for (const [name, description] of Object.entries(ERROR_RESPONSES)) {
    for (const [prefix, schema] of [
      ["", "Error"],
      ["OpenAI", "OpenAIError"],
    ]) {
      out[`${prefix}${name}`] = { description, content: { "application/json": { schema: { $ref: `#/components/schemas/${schema}` } } } };
    }
  }
  return out;
}

/** Tags, auth, undocumented-by-validator bodies and error responses of one operation. */
async function annotate(method: Method, path: string, op: Operation, schemas: Json): Promise<void> {
  const family = familyOf(path);
  const auth = authOf(method, path);
  if (family) op.tags = [family.tag];
  op.summary ??= SUMMARIES[`${method.toUpperCase()} ${path}`];
  if (auth) op.security = SECURITY[auth];
  const body = BODIES[`${method.toUpperCase()} ${path}`];
  if (body && !op.requestBody) {
    const schema = await openApiSchema(body.schema, schemas);
    op.requestBody = { required: body.required, content: { "application/json": { schema } } };
  }
  const ref = (name: ErrorResponse) => ({ $ref: `#/components/responses/${family?.tag === "OpenAI-compatible" ? "OpenAI" : ""}${name}` });
  const responses = (op.responses ??= {});
  for (const [status, r] of Object.entries(responses)) {
    if (!r.$ref && !r.description) r.description = status === "200" ? "OK" : "Answer";
  }
  if (op.requestBody || op.parameters?.length) responses["400"] ??= ref("InvalidRequest");
  if (auth && auth !== "public") responses["401"] ??= ref("Unauthorized");
  responses["429"] ??= ref("RateLimited");
  responses.default ??= ref("Error");
}

/** The document, less `servers` (the request's origin, added per answer). */
export async function buildDocument(app: { routes: RouterRoute[] }): Promise<Document> {
  const schemas: Json = {};
  const generated = await generateSpecs(Object.assign(new Hono(), { routes: documentedRoutes(app.routes) }), {
    documentation: {
      info: {
        title: "Edge inference network router",
        version: VERSION,
        description:
          "REST v1–v3, the OpenAI-compatible gateway (/openai/v1), MCP and A2A entry points of the router. " +
          "Generated from the zod schemas the routes validate with.",
      },
      tags: FAMILIES.map((f) => ({ name: f.tag, description: f.description })),
    },
    includeEmptyPaths: true,
    excludeStaticFile: false,
    defaultValidationErrorResponse: false,
  });
  const doc = generated as unknown as Document;
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (op) await annotate(method, path, op, schemas);
    }
  }
  Object.assign(schemas, {
    Error: await openApiSchema(ErrorEnvelope, schemas),
    OpenAIError: await openApiSchema(OpenAIErrorEnvelope, schemas),
  });
  doc.components = {
    ...doc.components,
    schemas: { ...doc.components?.schemas, ...schemas },
    responses: errorResponses(),
    securitySchemes: SECURITY_SCHEMES,
  };
  return doc;
}
