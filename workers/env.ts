import type { TaskView } from "../shared/views.ts";

// `Env` (bindings and vars) is generated from wrangler.toml into worker-configuration.d.ts by `npm run types`.

/** The router's own fetch, on the context so that no module imports the app (lib/rest-call.ts). */
export type RestFetch = (req: Request) => Response | Promise<Response>;

/**
 * What a route that did work reports (`c.set("metered", …)`) for usage metering, budgets, receipts and logs:
 * set before the Response is returned, or for SSE right before the final chunk is written (middleware/usage.ts
 * waits for the end of a streamed body before it reads it).
 */
export interface Metered {
  /** The public model name (gateway) or the network model id (REST routes). */
  model: string;
  /** The charged usage of the answer. */
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens?: number };
  /** In µUSD (gateway/model-map.ts priceOf); usage rows and logs sum `total`. */
  cost?: { currency: "USD"; unit: "micro_usd"; prompt: number; completion: number; total: number };
  network_model?: string;
  session_id?: string;
  task_ids?: string[];
  /** The finished tasks, for receipts. */
  tasks?: TaskView[];
  /** The work was done (and is charged) but the answer is a failure. */
  failed?: boolean;
}

/** Hono generics for the router: bindings plus what middleware puts on the context. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    /** Owner name of the API key that authenticated the request. */
    owner: string;
    /** Id of that API key: a managed key's id, or `static-…` derived from a static API_KEYS entry. */
    keyId: string;
    /** The models that key may use (public names or network ids); undefined: every model. */
    allowedModels: string[] | undefined;
    /** What the route's work used (see Metered). */
    metered: Metered;
    /** Address of the miner token that authenticated the request (routes for miners only). */
    miner: string;
    /** A trial route's in-process request (routes/trial.ts): apiKeyAuth lets it through as owner `trial`. */
    trial: boolean;
    /** The payer of a verified x402 payment (workers/x402/gate.ts): apiKeyAuth lets the request through as owner `x402`. */
    x402Payer: string;
    /** The router's own fetch: MCP and A2A make their REST calls through it (lib/rest-call.ts). */
    restFetch: RestFetch;
  };
}

export const VERSION = "0.1.0";
