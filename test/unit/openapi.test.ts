import { exports } from "cloudflare:workers";
import { Validator } from "@cfworker/json-schema";
import oas31 from "@seriousme/openapi-schema-validator/schemas/v3.1/schema.json";
import { Hono } from "hono";
import type { RouterRoute } from "hono/types";
import { findTargetHandler } from "hono/utils/handler";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import app from "../../workers/index.ts";
import { validation } from "../../workers/lib/request-validation.ts";
import { buildDocument, type Document, documentedRoutes, type Operation } from "../../workers/openapi/document.ts";
import { authOf, BODIES, familyOf } from "../../workers/openapi/families.ts";
import { SUMMARIES } from "../../workers/openapi/summaries.ts";
import { API_KEY, ORIGIN } from "./helpers.ts";

// /openapi.json against the app it describes: every route the Hono app registered is in the document with its
// method, every body/query/path a route validates is there with the zod schema's fields, every operation has a
// family and declares the auth the route really asks for. The checks run on the real app and, to show they can
// fail, on small apps with an undocumented route.

const router = (exports as unknown as { default: Fetcher }).default;
type Json = Record<string, unknown>;

/** `/a/:b{[0-9]+}/c` → `/a/{b}/c` (written here again, independently of hono-openapi). */
const openApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}");

/** The concrete routes of an app: every method route (middleware `ALL` and wildcards are not endpoints). */
function endpoints(routes: readonly RouterRoute[]): RouterRoute[] {
  return documentedRoutes(routes).filter((r) => r.method !== "ALL" && !r.path.includes("*"));
}

/** Field names of a zod schema by zod's own introspection: all of them, and those an input must carry. */
function zodKeys(schema: z.ZodType): { all: Set<string>; required: Set<string> } {
  const def = schema._zod.def as unknown as Json & { type: string };
  const none = { all: new Set<string>(), required: new Set<string>() };
  switch (def.type) {
    case "object": {
      const shape = def.shape as Record<string, z.ZodType>;
      const keys = Object.keys(shape);
      // zod's own word on an input key: `optin` is "optional" or "defaulted" where the key may be left out.
      return { all: new Set(keys), required: new Set(keys.filter((k) => shape[k]._zod.optin === undefined)) };
    }
    case "pipe":
      return zodKeys(def.in as z.ZodType);
    case "optional":
    case "nullable":
    case "default":
    case "prefault":
    case "readonly":
    case "catch":
      return zodKeys(def.innerType as z.ZodType);
    case "union": {
      const parts = (def.options as z.ZodType[]).map(zodKeys).filter((p) => p.all.size > 0);
      if (!parts.length) return none;
      return {
        all: new Set(parts.flatMap((p) => [...p.all])),
        required: new Set([...parts[0].required].filter((k) => parts.every((p) => p.required.has(k)))),
      };
    }
    case "intersection": {
      const [l, r] = [zodKeys(def.left as z.ZodType), zodKeys(def.right as z.ZodType)];
      return { all: new Set([...l.all, ...r.all]), required: new Set([...l.required, ...r.required]) };
    }
    default:
      return none;
  }
}

/** Field names of a schema in the document, `$ref`s resolved. */
function docKeys(schema: Json | undefined, doc: Document): { all: Set<string>; required: Set<string> } {
  const none = { all: new Set<string>(), required: new Set<string>() };
  if (!schema) return none;
  if (typeof schema.$ref === "string") return docKeys(resolve(doc, schema.$ref), doc);
  const alternatives = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (alternatives) {
    const parts = alternatives.map((s) => docKeys(s, doc)).filter((p) => p.all.size > 0);
    if (!parts.length) return none;
    return {
      all: new Set(parts.flatMap((p) => [...p.all])),
      required: new Set([...parts[0].required].filter((k) => parts.every((p) => p.required.has(k)))),
    };
  }
  if (schema.allOf) {
    const parts = (schema.allOf as Json[]).map((s) => docKeys(s, doc));
    return { all: new Set(parts.flatMap((p) => [...p.all])), required: new Set(parts.flatMap((p) => [...p.required])) };
  }
  const props = Object.keys((schema.properties as Json | undefined) ?? {});
  return { all: new Set(props), required: new Set((schema.required as string[] | undefined) ?? []) };
}

function resolve(doc: Document, ref: string): Json | undefined {
  if (!ref.startsWith("#/")) return undefined;
  let at: unknown = doc;
  for (const part of ref.slice(2).split("/")) at = (at as Json | undefined)?.[part.replaceAll("~1", "/").replaceAll("~0", "~")];
  return at as Json | undefined;
}

/** The parameters of an operation, `$ref`s resolved. */
const parametersOf = (op: Operation, doc: Document) => (op.parameters ?? []).map((p) => (p.$ref ? (resolve(doc, p.$ref) as typeof p) : p));

/** Everything wrong between an app's routes and its document (empty when they agree). */
function problems(routes: readonly RouterRoute[], doc: Document): string[] {
  const out: string[] = [];
  for (const r of endpoints(routes)) {
    const path = openApiPath(r.path);
    const op = doc.paths[path]?.[r.method.toLowerCase() as "get"];
    const at = `${r.method} ${path}`;
    if (!op) {
      out.push(`${at}: not in the document`);
      continue;
    }
    const v = validation(findTargetHandler(r.handler));
    if (!v) continue;
    if (v.target === "json") {
      const body = op.requestBody?.content["application/json"]?.schema;
      if (!body) out.push(`${at}: validates a JSON body the document does not show`);
      const [want, got] = [zodKeys(v.schema), docKeys(body, doc)];
      if ([...want.all].sort().join() !== [...got.all].sort().join()) {
        out.push(`${at}: body fields ${[...got.all]} ≠ schema's ${[...want.all]}`);
      }
      if ([...want.required].sort().join() !== [...got.required].sort().join()) {
        out.push(`${at}: required body fields ${[...got.required]} ≠ schema's ${[...want.required]}`);
      }
    } else {
      const where = v.target === "param" ? "path" : "query";
      const names = new Set(
        parametersOf(op, doc)
          .filter((p) => p.in === where)
          .map((p) => p.name),
      );
      for (const k of zodKeys(v.schema).all) if (!names.has(k)) out.push(`${at}: ${where} parameter ${k} not documented`);
    }
  }
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const at = `${method.toUpperCase()} ${path}`;
      if (!familyOf(path) || !op?.tags?.length) out.push(`${at}: no family (workers/openapi/families.ts)`);
      if (!Array.isArray(op?.security)) out.push(`${at}: no security`);
      if (["post", "put", "patch"].includes(method) && !op?.requestBody && BODIES[at] !== null) out.push(`${at}: body undocumented`);
    }
  }
  return [...new Set(out)];
}

let doc: Document;

beforeAll(async () => {
  const res = await router.fetch(`${ORIGIN}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("application/json");
  doc = (await res.json()) as Document;
});

describe("GET /openapi.json", () => {
  it("is an OpenAPI 3.1 document of this router: info, servers = the request's origin, security schemes", () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(doc.servers).toEqual([{ url: ORIGIN }]);
    expect(Object.keys((doc.components?.securitySchemes as Json) ?? {}).sort()).toEqual(["adminSecret", "apiKey", "minerToken"]);
    expect(Object.keys(doc.paths).length).toBeGreaterThan(30);
  });

  it("validates against the OpenAPI 3.1 JSON Schema (the specification's own, 2026 revision)", () => {
    const validator = new Validator(oas31 as object, "2020-12", false);
    const valid = validator.validate(doc);
    expect(valid.errors.slice(-6)).toEqual([]);
    expect(valid.valid).toBe(true);
    // And it can fail: an operation without responses, a path not starting with "/".
    const broken = structuredClone(doc) as unknown as { paths: Record<string, { get?: Json }> };
    broken.paths["no-slash"] = { get: { responses: {} } };
    expect(validator.validate(broken).valid).toBe(false);
  });

  it("every operation is well formed: unique operationId, responses with descriptions, declared path parameters, refs resolve", () => {
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item) as [string, Operation][]) {
        const at = `${method} ${path}`;
        expect(op.operationId, at).toBeTruthy();
        expect(ids.has(op.operationId as string), `${at}: duplicate operationId`).toBe(false);
        ids.add(op.operationId as string);
        expect(Object.keys(op.responses ?? {}).length, at).toBeGreaterThan(0);
        for (const r of Object.values(op.responses ?? {})) expect(r.$ref ?? r.description, at).toBeTruthy();
        const declared = parametersOf(op, doc).filter((p) => p.in === "path");
        for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
          expect(declared.find((p) => p.name === name)?.required, `${at}: path parameter ${name}`).toBe(true);
        }
      }
    }
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"([^"]+)"/g)].map((m) => m[1]);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of new Set(refs)) expect(resolve(doc, ref), ref).toBeDefined();
  });

  it("every route the app registered is in it with its method; every validated body/query/path with the zod schema's fields", () => {
    const routes = endpoints(app.routes);
    expect(routes.length).toBeGreaterThan(30);
    // A few the issue names, so a broken route walk cannot pass by listing nothing.
    const listed = new Set(routes.map((r) => `${r.method} ${openApiPath(r.path)}`));
    for (const r of [
      "GET /openapi.json",
      "GET /docs",
      "POST /api/v1/sessions",
      "POST /api/v1/completions",
      "POST /mcp",
      "POST /api/v1/a2a",
    ]) {
      expect(listed.has(r), r).toBe(true);
    }
    // The validators are found through the mounted sub-apps (else the field comparison would compare nothing).
    const validated = routes.filter((r) => validation(findTargetHandler(r.handler)));
    expect(validated.length).toBeGreaterThan(25);
    expect(problems(app.routes, doc)).toEqual([]);
  });

  it("a validated body is the route's zod schema: POST /api/v1/sessions carries CreateSessionBody's fields", () => {
    const body = doc.paths["/api/v1/sessions"]?.post?.requestBody?.content["application/json"]?.schema;
    expect([...docKeys(body, doc).all]).toEqual(expect.arrayContaining(["model", "deposit"]));
  });

  it("every summary and declared body names an operation that exists (none outlives its route)", () => {
    const operations = new Set(Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`)));
    expect(Object.keys(SUMMARIES).filter((k) => !operations.has(k))).toEqual([]);
    expect(Object.keys(BODIES).filter((k) => !operations.has(k))).toEqual([]);
    expect(doc.paths["/api/v1/sessions"]?.post?.summary).toBe(SUMMARIES["POST /api/v1/sessions"]);
  });

  it("an optional path parameter is documented as both paths", () => {
    expect(doc.paths["/api/v1/completions"]?.post).toBeDefined();
    expect(doc.paths["/api/v1/completions/{sessionId}"]?.post).toBeDefined();
  });

  it("errors are the house envelope (the OpenAI surface: OpenAI's); the codes are shared/errors.ts's", () => {
    const error = doc.components?.schemas?.Error as Json;
    expect(Object.keys(error.properties as Json).sort()).toEqual(["error", "request_id"]);
    expect(JSON.stringify(error)).toContain("budget_exhausted");
    expect(doc.paths["/api/v1/sessions"]?.post?.responses?.["400"]).toEqual({ $ref: "#/components/responses/InvalidRequest" });
    expect(resolve(doc, "#/components/responses/InvalidRequest")).toMatchObject({
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    });
    const openai = Object.entries(doc.paths).filter(([p]) => p.startsWith("/openai/v1/"));
    for (const [path, item] of openai) {
      expect(JSON.stringify(item), path).toContain("#/components/responses/OpenAI");
      expect(JSON.stringify(item), path).not.toContain('"#/components/responses/Error"');
    }
  });
});

/** A URL for a documented path: each parameter a plausible value (the URN one a well-formed URN). */
const URN = {
  payload: `urn:edge:payload:openapi-s:1:${"ab".repeat(32)}`,
  result: `urn:edge:result:openapi-s:1:0x${"1".repeat(40)}:${"ab".repeat(32)}`,
};
const fill = (path: string) =>
  path.replace(/\{([^}]+)\}/g, (_m, name: string) =>
    name === "urn"
      ? encodeURIComponent(path.includes("/result/") ? URN.result : URN.payload)
      : name === "address"
        ? `0x${"1".repeat(40)}`
        : "1",
  );

/** Bodies for the routes that check their body before the caller's credentials (a `{}` would be a 400 there). */
const SAMPLE: Record<string, unknown> = {
  "POST /api/v1/auth/payload_enc_key/session": { session_id: "openapi-s" },
  "POST /api/v1/auth/payload_enc_key/task": { session_id: "openapi-s", task_id: 1 },
  "PUT /api/v1/auth/payload_allowlist": { session_id: "openapi-s", miners: [] },
};

describe("documented auth is the route's real auth", () => {
  it("without credentials, every non-public operation answers 401 and every public one does not", async () => {
    const wrong: string[] = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        const auth = authOf(method, path);
        const body = ["post", "put", "patch"].includes(method)
          ? JSON.stringify(SAMPLE[`${method.toUpperCase()} ${path}`] ?? {})
          : undefined;
        // GETs ask for a WebSocket (the miner channels check the upgrade before the token); bodies are `{}`.
        const headers: Record<string, string> = body ? { "content-type": "application/json" } : { upgrade: "websocket" };
        const res = await router.fetch(`${ORIGIN}${fill(path)}`, { method: method.toUpperCase(), headers, body });
        await res.body?.cancel();
        if ((res.status === 401) !== (auth !== "public")) wrong.push(`${method.toUpperCase()} ${path}: ${auth} but ${res.status}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("an API key does not open an operation documented for the admin secret or a miner token only", async () => {
    const opened: string[] = [];
    let checked = 0;
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        const auth = authOf(method, path);
        if (auth !== "admin" && auth !== "miner_token") continue;
        checked++;
        const body = ["post", "put", "patch"].includes(method) ? "{}" : undefined;
        const headers: Record<string, string> = {
          authorization: `Bearer ${API_KEY}`,
          ...(body ? { "content-type": "application/json" } : { upgrade: "websocket" }),
        };
        const res = await router.fetch(`${ORIGIN}${fill(path)}`, { method: method.toUpperCase(), headers, body });
        await res.body?.cancel();
        if (res.status !== 401 && res.status !== 403)
          opened.push(`${method.toUpperCase()} ${path}: ${auth} but ${res.status} with an API key`);
      }
    }
    expect(checked).toBeGreaterThan(5);
    expect(opened).toEqual([]);
  });
});

describe("GET /docs", () => {
  it("is the HTML reference page over /openapi.json", async () => {
    const res = await router.fetch(`${ORIGIN}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    const html = await res.text();
    expect(html).toContain("/openapi.json");
    expect(html).toContain("@scalar/api-reference@");
  });
});

describe("the checks fail on an undocumented route", () => {
  it("a route that parses its own body, or a family-less path, is reported", async () => {
    const rogue = new Hono();
    rogue.post("/api/v1/sessions/rogue", async (c) => c.json(z.object({ a: z.string() }).parse(await c.req.json())));
    rogue.get("/nowhere", (c) => c.text("x"));
    const found = problems(rogue.routes, await buildDocument(rogue));
    expect(found).toContain("POST /api/v1/sessions/rogue: body undocumented");
    expect(found).toContain("GET /nowhere: no family (workers/openapi/families.ts)");
  });

  it("a route whose document lost its schema is reported (the document is compared with the live schema)", async () => {
    const { jsonBody } = await import("../../workers/lib/request-validation.ts");
    const small = new Hono();
    small.post("/api/v1/sessions", jsonBody(z.object({ model: z.string(), deposit: z.number().optional() })), (c) => c.json({}));
    const good = await buildDocument(small);
    expect(problems(small.routes, good)).toEqual([]);
    const body = good.paths["/api/v1/sessions"]?.post?.requestBody?.content["application/json"]?.schema as Json;
    expect(docKeys(body, good).required).toEqual(new Set(["model"]));
    delete (body.properties as Json).deposit;
    expect(problems(small.routes, good)).toEqual(["POST /api/v1/sessions: body fields model ≠ schema's model,deposit"]);
    delete good.paths["/api/v1/sessions"];
    expect(problems(small.routes, good)).toEqual(["POST /api/v1/sessions: not in the document"]);
  });
});

describe("validation errors keep the house envelope", () => {
  it("a bad body is 400 invalid_request with [{path, message}] details", async () => {
    const res = await router.fetch(`${ORIGIN}/api/v1/sessions`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: 7 }),
    });
    expect(res.status).toBe(400);
    const err = (await res.json()) as { request_id: string; error: { code: string; message: string; details: { path: string }[] } };
    expect(err.error.code).toBe("invalid_request");
    expect(err.error.message).toBe("request body is invalid");
    expect(err.error.details.map((d) => d.path)).toContain("model");
    expect(err.request_id).toBe(res.headers.get("x-request-id"));
  });
});
