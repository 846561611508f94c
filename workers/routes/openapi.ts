import { Scalar } from "@scalar/hono-api-reference";
import { Hono } from "hono";
import type { RouterRoute } from "hono/types";
import type { AppEnv } from "../env.ts";
import { buildDocument, type Document } from "../openapi/document.ts";

// GET /openapi.json (the router's OpenAPI 3.1 document) and GET /docs (Scalar's API reference page over it). Both
// public: they describe the API, they hold nothing of anyone's. index.ts passes the app whose routes they describe.

/** The reference page's script, pinned (the page loads it from jsDelivr in the browser; the Worker serves HTML only). */
const SCALAR_CDN = "https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1";

export function openApi(app: { routes: RouterRoute[] }): Hono<AppEnv> {
  // Per isolate: the routes are fixed once the module loaded, so the document is built once, on first ask.
  let document: Promise<Document> | undefined;
  const routes = new Hono<AppEnv>();
  routes.get("/openapi.json", async (c) => {
    document ??= buildDocument(app).catch((err) => {
      document = undefined;
      throw err;
    });
    c.header("Cache-Control", "public, max-age=300");
    return c.json({ ...(await document), servers: [{ url: new URL(c.req.url).origin }] });
  });
  routes.get("/docs", Scalar({ url: "/openapi.json", pageTitle: "Edge inference network API", cdn: SCALAR_CDN }));
  return routes;
}
