import { type AgentCard, AgentCard as AgentCardJson, type AgentSkill } from "@a2a-js/sdk";
import { LegacyRestTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import type { A2ARequestHandler } from "@a2a-js/sdk/server";
import { ServerCallContext } from "@a2a-js/sdk/server";
import { VERSION } from "../env.ts";
import type { SkillId } from "./skills.ts";

// The agent card: discovery, public (it names no tenant's data). Its URLs come from the request's origin, so the
// card is right wherever the router is reached. One JSON-RPC URL serves both protocol versions (the 0.3 and 1.0
// method names differ, so the endpoint tells them apart by name); the card lists it once per version.

export const A2A_PATH = "/api/v1/a2a";
export const CARD_PATHS = ["/.well-known/agent-card.json", "/.well-known/agent.json", `${A2A_PATH}/agent.json`] as const;

const IO_MODES = ["text/plain", "application/json"];

interface SkillDoc {
  name: string;
  description: string;
  tags: string[];
  examples: string[];
  /** The REST routes the skill is, by `version`. */
  routes: Record<number, string>;
}

export const SKILLS: Record<SkillId, SkillDoc> = {
  completion: {
    name: "Completion",
    description:
      "Text completion on the network's miners (POST /api/v1/completions). A plain text message is its prompt; a data " +
      "part may carry the REST body's fields (max_tokens, temperature, session_id, …). Tokens stream as artifact updates.",
    tags: ["completion", "llm", "inference"],
    examples: ["The edge network", JSON.stringify({ skill: "completion", prompt: "The edge network", max_tokens: 32 })],
    routes: { 1: "/api/v1/completions" },
  },
  delegate: {
    name: "Delegate",
    description:
      "Hands a task to the network (POST /api/v{1,2,3}/delegate): v1 fields task_request_input, task_domain, task_type; " +
      "v2 objective, input, execution, policy; v3 adds consensus (replicas across the session pool).",
    tags: ["delegate", "work"],
    examples: [JSON.stringify({ skill: "delegate", task_request_input: "Summarise: the sky is blue.", max_tokens: 32 })],
    routes: { 1: "/api/v1/delegate", 2: "/api/v2/delegate", 3: "/api/v3/delegate" },
  },
  validate: {
    name: "Validate",
    description:
      "Judges a result against its request (POST /api/v{1,2,3}/validate): v1 fields task_request_input, " +
      "task_result_output, evaluation_mode; v2 claim, policy, context; v3 adds consensus.",
    tags: ["validate", "verdict"],
    examples: [JSON.stringify({ skill: "validate", task_request_input: "2 + 2 =", task_result_output: "4" })],
    routes: { 1: "/api/v1/validate", 2: "/api/v2/validate", 3: "/api/v3/validate" },
  },
  factcheck: {
    name: "Factcheck",
    description: "Checks a claim (POST /api/v1/factcheck): fields claim, mode (standard|realtime), documents, context, consensus.",
    tags: ["factcheck", "verdict"],
    examples: [JSON.stringify({ skill: "factcheck", claim: "Water boils at 100 C at sea level.", mode: "standard" })],
    routes: { 1: "/api/v1/factcheck" },
  },
};

const cardSkills = (): AgentSkill[] =>
  Object.entries(SKILLS).map(([id, s]) => ({
    id,
    name: s.name,
    description: s.description,
    tags: s.tags,
    examples: s.examples,
    inputModes: IO_MODES,
    outputModes: IO_MODES,
    securityRequirements: [],
  }));

/** The card (SDK 1.0 types) as seen from `origin`. */
export function agentCard(env: Env, origin: string): AgentCard {
  const url = `${origin}${A2A_PATH}`;
  return {
    name: env.ROUTER_NAME,
    description: "Decentralized inference router: completions, delegated work, validation and fact checks run by redundant miners",
    supportedInterfaces: [
      { url, protocolBinding: "JSONRPC", tenant: "", protocolVersion: "1.0" },
      { url, protocolBinding: "JSONRPC", tenant: "", protocolVersion: "0.3" },
    ],
    provider: { organization: env.ROUTER_NAME, url: origin },
    version: VERSION,
    documentationUrl: `${origin}${A2A_PATH}/discovery`,
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {
      apiKey: {
        scheme: {
          $case: "httpAuthSecurityScheme",
          value: { description: "The router's API key: Authorization: Bearer <api key>", scheme: "Bearer", bearerFormat: "API key" },
        },
      },
    },
    securityRequirements: [{ schemes: { apiKey: { list: [] } } }],
    defaultInputModes: IO_MODES,
    defaultOutputModes: IO_MODES,
    skills: cardSkills(),
    signatures: [],
  };
}

/** The card as 1.0 clients read it (proto JSON). */
export const cardV1Json = (card: AgentCard) => AgentCardJson.toJSON(card);

/**
 * The card as 0.3 clients read it, with the 1.0 interfaces embedded (the SDK's own superset card: a 1.0 client
 * reading it picks `supportedInterfaces`). The SDK translates only through a handler, so it gets one that answers
 * the card and nothing else.
 */
export async function cardV03Json(card: AgentCard): Promise<Record<string, unknown>> {
  const cardOnly = { getAuthenticatedExtendedAgentCard: async () => card } as unknown as A2ARequestHandler;
  const legacy = await new LegacyRestTransportHandler(cardOnly).getAuthenticatedExtendedAgentCard(new ServerCallContext());
  return { ...legacy, supportedInterfaces: card.supportedInterfaces };
}
