import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY, ROOT, type Router, startRouter } from "../helpers/network.ts";

// A bounded fuzz over every route of the router: the routes are read from its Hono app itself (imported here
// with the Workers runtime module stubbed, see vitest.config.ts), then each is called against a real router
// (wrangler dev, no miners) with malformed JSON, wrong types, huge numbers, unicode, deep nesting, 10 MB bodies,
// odd path parameters and missing or invalid credentials. Every answer must be below 500 and, when it is an
// error, the house envelope `{request_id, error: {code, message, details}}`.

interface Route {
  method: string;
  path: string;
}

interface Probe {
  route: Route;
  what: string;
  url: string;
  init: RequestInit & { headers: Record<string, string> };
}

const MB10 = `{"prompt":"${"x".repeat(10 * 1024 * 1024)}"}`;
const DEEP = `{"a":${"[".repeat(5000)}${"]".repeat(5000)}}`;
const BODIES: [string, string][] = [
  ["malformed JSON", '{"prompt": "unterminated'],
  ["empty", ""],
  ["array", "[]"],
  ["string", '"just a string"'],
  ["number", "42"],
  ["null", "null"],
  [
    "wrong types",
    JSON.stringify({
      prompt: 123,
      max_tokens: "many",
      session_id: {},
      stream: "yes",
      claim: [],
      objective: null,
      input: 5,
      address: 7,
      task_request_input: {},
      metadata: "m",
      deposit: "lots",
      miners: "0x",
      content: 1,
      signature: 2,
      consensus: { replicas: "three", session_pool: 3 },
    }),
  ],
  ["huge numbers", '{"prompt": 1e400, "max_tokens": 1e308, "deposit": -1e308, "timeout": 9007199254740993, "temperature": 1e-400}'],
  ["unicode", JSON.stringify({ prompt: 42, "\u202e\u0000key": "\ud800 😀 \ufeff\u0000", claim: 7, address: "0x😀" })],
  ["deep nesting", DEEP],
];
/** Path parameters: a plausible one and odd ones, by parameter name. */
const PLAUSIBLE: Record<string, string> = {
  sessionId: "fuzz-session",
  id: "fuzz-session",
  taskId: "1",
  address: `0x${"1".repeat(40)}`,
  urn: encodeURIComponent(`urn:edge:payload:fuzz-session:1:${"ab".repeat(32)}`),
};
const ODD = ["..%2F..%2Fetc%2Fpasswd", "%00", encodeURIComponent("ünïcødé-😀\u202e"), "a".repeat(300), "-1", "1e400"];
const CREDENTIALS: [string, Record<string, string>][] = [
  ["no credentials", {}],
  ["invalid bearer", { authorization: "Bearer not-a-key" }],
  ["miner-shaped token", { authorization: `Bearer ${"eyJ".padEnd(40, "A")}.${"B".repeat(43)}` }],
  ["malformed header", { authorization: "Basic Zm9vOmJhcg==" }],
];

let router: Router;
const routes: Route[] = [];

beforeAll(async () => {
  const { default: app } = (await import(join(ROOT, "workers/index.ts"))) as { default: { routes: Route[] } };
  const seen = new Set<string>();
  for (const r of app.routes) {
    const key = `${r.method} ${r.path}`;
    if (r.method === "ALL" || r.path.includes("*") || seen.has(key)) continue;
    seen.add(key);
    routes.push({ method: r.method, path: r.path });
  }
  router = await startRouter();
});

afterAll(async () => {
  await router?.stop();
});

function fill(path: string, odd: string | null): string {
  return path.replace(/:([A-Za-z]+)(\{[^}]*\})?/g, (_m, name: string) => odd ?? PLAUSIBLE[name] ?? "fuzz");
}

/** Every probe of one route. */
function probes(route: Route, n: { odd: number }): Probe[] {
  const out: Probe[] = [];
  const hasParams = route.path.includes(":");
  const paths = [
    fill(route.path, null),
    ...(hasParams ? [fill(route.path, ODD[n.odd++ % ODD.length]), fill(route.path, ODD[n.odd++ % ODD.length])] : []),
  ];
  const takesBody = route.method !== "GET" && route.method !== "HEAD";
  const json = { "content-type": "application/json" };
  const probe = (what: string, path: string, headers: Record<string, string>, body?: string): Probe => ({
    route,
    what,
    url: `${router.url}${path}`,
    init: { method: route.method, headers, body },
  });
  for (const path of paths) {
    for (const [what, headers] of CREDENTIALS)
      out.push(probe(what, path, { ...headers, ...(takesBody ? json : {}) }, takesBody ? "{}" : undefined));
    const key = { authorization: `Bearer ${API_KEY}` };
    if (!takesBody) {
      out.push(probe("valid key", path, key));
      out.push(probe("odd query", `${path}?limit=1e400&before=-1&decrypt=%F0%9F%98%80&x=${"q".repeat(2000)}`, key));
      continue;
    }
    for (const [what, body] of BODIES) out.push(probe(what, path, { ...key, ...json }, body));
    out.push(probe("text/plain JSON", path, { ...key, "content-type": "text/plain" }, '{"prompt": 1}'));
  }
  if (takesBody) out.push(probe("10 MB body", paths[0], { authorization: `Bearer ${API_KEY}`, ...json }, MB10));
  // The path with a method it does not take.
  out.push({ ...probe("wrong method", paths[0], {}), init: { method: "PATCH", headers: { authorization: `Bearer ${API_KEY}` } } });
  return out;
}

interface Outcome {
  probe: Probe;
  status: number;
  problem: string | null;
}

const JSON_RPC = /^\/(mcp|mcp\/messages|messages|api\/v1\/a2a)\/?$/;

function isJsonRpcError(body: any): boolean {
  const errors = Array.isArray(body) ? body : [body];
  return (
    errors.length > 0 &&
    errors.every((b) => b?.jsonrpc === "2.0" && Number.isInteger(b.error?.code) && typeof b.error?.message === "string")
  );
}

async function send(p: Probe, i: number): Promise<Outcome> {
  // A fresh client address per probe: the per-IP limits are the attack suite's business, not the fuzz's.
  const headers = { ...p.init.headers, "CF-Connecting-IP": `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` };
  let res: Response;
  try {
    res = await fetch(p.url, { ...p.init, headers, signal: AbortSignal.timeout(20_000) });
  } catch (err) {
    return { probe: p, status: 0, problem: `no answer: ${String(err)}` };
  }
  // An event stream that opened (GET /sse, MCP's legacy transport) never ends by itself: its answer is that it opened.
  if (res.status === 200 && res.headers.get("content-type")?.startsWith("text/event-stream")) {
    await res.body?.cancel();
    return { probe: p, status: res.status, problem: null };
  }
  const text = await res.text();
  if (res.status >= 500) return { probe: p, status: res.status, problem: `status ${res.status}: ${text.slice(0, 200)}` };
  if (res.status < 400)
    return { probe: p, status: res.status, problem: res.status < 200 || res.status >= 300 ? `status ${res.status}` : null };
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    return { probe: p, status: res.status, problem: `not JSON: ${text.slice(0, 200)}` };
  }
  // The JSON-RPC endpoints (MCP Streamable HTTP, A2A) answer a bad message past auth with a JSON-RPC error, as
  // their protocols say; auth, limits and body size still answer with the envelope (checked above them).
  if (JSON_RPC.test(new URL(p.url).pathname) && isJsonRpcError(body)) return { probe: p, status: res.status, problem: null };
  // The OpenAI-compatible gateway answers in OpenAI's error shape (the `openai` client's typed errors read it).
  if (new URL(p.url).pathname.startsWith("/openai/")) {
    const e = body?.error;
    const openAiShape =
      typeof e?.message === "string" && typeof e?.type === "string" && "param" in e && "code" in e && !!res.headers.get("x-request-id");
    return { probe: p, status: res.status, problem: openAiShape ? null : `not OpenAI's error shape: ${text.slice(0, 200)}` };
  }
  const ok =
    typeof body?.request_id === "string" &&
    body.request_id === res.headers.get("x-request-id") &&
    typeof body.error?.code === "string" &&
    typeof body.error?.message === "string" &&
    "details" in body.error;
  return { probe: p, status: res.status, problem: ok ? null : `not the error envelope: ${text.slice(0, 200)}` };
}

describe("fuzz: every route, bad input and bad credentials", () => {
  it("answers every probe below 500 with the JSON error envelope", async () => {
    expect(routes.length).toBeGreaterThan(20);
    const counter = { odd: 0 };
    const all = routes.flatMap((r) => probes(r, counter));
    const started = Date.now();
    const outcomes: Outcome[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < all.length) {
          const i = next++;
          outcomes.push(await send(all[i], i));
        }
      }),
    );
    const byStatus = new Map<number, number>();
    for (const o of outcomes) byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
    const bad = outcomes.filter((o) => o.problem);
    console.log(
      `fuzz: ${routes.length} routes, ${outcomes.length} requests in ${((Date.now() - started) / 1000).toFixed(1)} s; by status ${JSON.stringify(
        Object.fromEntries([...byStatus].sort((a, b) => a[0] - b[0])),
      )}; 5xx ${outcomes.filter((o) => o.status >= 500).length}, not the envelope ${bad.filter((o) => o.status < 500).length}`,
    );
    expect(
      bad
        .slice(0, 20)
        .map(
          (o) => `${o.probe.init.method} ${o.probe.url.slice(router.url.length, router.url.length + 120)} [${o.probe.what}]: ${o.problem}`,
        ),
    ).toEqual([]);
    expect(outcomes).toHaveLength(all.length);
  });
});
