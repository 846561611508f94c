import { A2A_VERSION_HEADER } from "@a2a-js/sdk";
import { type Context, Hono } from "hono";
import { type AppEnv, VERSION } from "../env.ts";
import { A2A_PATH, agentCard, CARD_PATHS, cardV1Json, cardV03Json, SKILLS } from "./card.ts";
import { handleJsonRpc } from "./jsonrpc.ts";

// A2A routes. The cards and the discovery document are public (index.ts mounts `a2aPublic` before the API-key
// check); the JSON-RPC endpoint `a2a` is mounted after it, so an unauthenticated call is the router's 401.

export const a2aPublic = new Hono<AppEnv>();

const origin = (c: Context<AppEnv>) => new URL(c.req.url).origin;

/**
 * One card, two shapes, as the SDK's own card handler does it: a client that asks for A2A 1.x (`A2A-Version`)
 * gets the 1.0 card; one that asks for nothing or 0.3 gets the 0.3 card, which embeds the 1.0 interfaces.
 */
async function serveCard(c: Context<AppEnv>) {
  const card = agentCard(c.env, origin(c));
  const asked = c.req.header(A2A_VERSION_HEADER) ?? "0.3";
  c.header("Vary", A2A_VERSION_HEADER);
  c.header("Cache-Control", "public, max-age=300");
  return c.json(asked.startsWith("0.") ? await cardV03Json(card) : cardV1Json(card));
}
for (const path of CARD_PATHS) a2aPublic.get(path, serveCard);

/** What the router offers agents: its A2A endpoint and skills, and its MCP endpoints. */
a2aPublic.get(`${A2A_PATH}/discovery`, (c) => {
  const o = origin(c);
  return c.json({
    name: c.env.ROUTER_NAME,
    version: VERSION,
    auth: "Authorization: Bearer <api key> on the A2A JSON-RPC endpoint and the MCP endpoints; cards and this document are public",
    a2a: {
      agent_cards: CARD_PATHS.map((p) => `${o}${p}`),
      jsonrpc: `${o}${A2A_PATH}`,
      protocol_versions: ["1.0", "0.3"],
      methods: {
        "1.0": ["SendMessage", "SendStreamingMessage", "GetTask", "CancelTask", "ListTasks"],
        "0.3": ["message/send", "message/stream", "tasks/get", "tasks/cancel"],
      },
    },
    skills: Object.entries(SKILLS).map(([id, s]) => ({
      id,
      name: s.name,
      description: s.description,
      rest: Object.values(s.routes),
      examples: s.examples,
    })),
    mcp: {
      streamable_http: [`${o}/mcp`, `${o}/mcp/messages`],
      legacy_sse: [`${o}/sse`, `${o}/mcp/legacy`],
    },
  });
});

export const a2a = new Hono<AppEnv>();

a2a.post("/", handleJsonRpc);
