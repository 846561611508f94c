// `Env` (bindings and vars) is generated from wrangler.toml into worker-configuration.d.ts by `npm run types`.

/** The router's own fetch, on the context so that no module imports the app (lib/rest-call.ts). */
export type RestFetch = (req: Request) => Response | Promise<Response>;

/** Hono generics for the router: bindings plus what middleware puts on the context. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    /** Owner name of the API key that authenticated the request. */
    owner: string;
    /** Address of the miner token that authenticated the request (routes for miners only). */
    miner: string;
    /** The router's own fetch: MCP and A2A make their REST calls through it (lib/rest-call.ts). */
    restFetch: RestFetch;
  };
}

export const VERSION = "0.1.0";
