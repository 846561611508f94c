import { createMiddleware } from "hono/factory";
import { deploymentProblems } from "../../durable-objects/deployment.ts";
import type { AppEnv } from "../env.ts";
import { modelMapProblems } from "../gateway/model-map.ts";
import { ApiError } from "../lib/api-error.ts";
import { secretProblems } from "../lib/secrets.ts";

// A router with missing, weak or published secrets, or a malformed deployment identity (the domain miners sign
// for), refuses every request, /ping included (a health check then shows the misconfiguration), with 503
// `configuration_error`. The findings are logged once per isolate,
// when it serves its first request (the earliest moment a Worker sees its env); clients learn which variables
// are wrong, never a value or an owner name.

let checked: { of: string; problems: string[]; variables: string[] } | null = null;

/** Variables a finding may name (secrets, and the deployment identity every signature is bound to). */
const CHECKED = [
  "API_KEYS",
  "MINER_TOKEN_SECRET",
  "PAYLOAD_KEY_SEEDS",
  "ADMIN_SECRET",
  "ROUTER_SIGNING_KEY",
  "ROUTER_NAME",
  "ROUTER_ADDRESS",
  "CHAIN_ID",
  "MODEL_MAP",
];

function check(env: Env) {
  const of = CHECKED.map((v) => env[v as keyof Env]).join("\n") + env.ROUTER_ENV;
  if (checked?.of === of) return checked;
  const problems = [...secretProblems(env), ...deploymentProblems(env), ...modelMapProblems(env)];
  const variables = CHECKED.filter((v) => problems.some((p) => p.startsWith(`${v} `)));
  if (problems.length > 0) {
    console.error(
      `router refuses to serve: its secrets or deployment identity are not fit to use (in production set them with \`wrangler secret put <NAME>\`; for local development \`npm start\` writes .dev.vars):\n  - ${problems.join("\n  - ")}`,
    );
  }
  checked = { of, problems, variables };
  return checked;
}

export const configGuard = createMiddleware<AppEnv>(async (c, next) => {
  const { problems, variables } = check(c.env);
  if (problems.length > 0) {
    throw new ApiError(
      "configuration_error",
      "the router refuses to serve: its secrets or deployment identity are missing, too short, malformed or published development values (see its log and details.variables)",
      { variables },
    );
  }
  await next();
});
