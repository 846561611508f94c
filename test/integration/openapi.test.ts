import { join } from "node:path";
import { Validator } from "@cfworker/json-schema";
import oas31 from "@seriousme/openapi-schema-validator/schemas/v3.1/schema.json";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, type Router, startRouter } from "../helpers/network.ts";

// /openapi.json and /docs from the Worker as wrangler builds it (esbuild, not the unit pool's bundler: the schema
// converters load their zod support through dynamic imports, which each bundler resolves its own way), under
// workerd: the document is served, valid OpenAPI 3.1, and lists every route of the app imported here.

interface Route {
  method: string;
  path: string;
}

let router: Router;
let routes: Route[] = [];

beforeAll(async () => {
  const { default: app } = (await import(join(ROOT, "workers/index.ts"))) as { default: { routes: Route[] } };
  routes = app.routes.filter((r) => r.method !== "ALL" && !r.path.includes("*"));
  router = await startRouter();
});

afterAll(async () => {
  await router?.stop();
});

describe("the API reference under wrangler dev", () => {
  it("serves a valid OpenAPI 3.1 document naming every route of the app, with the request's origin as server", async () => {
    const res = await fetch(`${router.url}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; servers: { url: string }[]; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toMatch(/^3\.1\./);
    expect(doc.servers).toEqual([{ url: router.url }]);
    const result = new Validator(oas31 as object, "2020-12", false).validate(doc);
    expect(result.errors.slice(-3)).toEqual([]);
    expect(routes.length).toBeGreaterThan(30);
    const missing = routes
      .map((r) => ({
        method: r.method.toLowerCase(),
        path: r.path.replace(/\/:[^/]+\?$/, "").replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}"),
      }))
      .filter((r) => !doc.paths[r.path || "/"]?.[r.method]);
    expect(missing).toEqual([]);
    // A validated body made it through the bundle: the completion's zod fields.
    const body = JSON.stringify(doc.paths["/api/v1/completions"]?.post);
    expect(body).toContain('"prompt"');
    expect(body).toContain('"max_tokens"');
  });

  it("serves the reference page", async () => {
    const res = await fetch(`${router.url}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    expect(await res.text()).toContain("/openapi.json");
  });
});
