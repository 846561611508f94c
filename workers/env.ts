// `Env` (bindings and vars) is generated from wrangler.toml into worker-configuration.d.ts by `npm run types`.

/** Hono generics for the router: bindings plus what middleware puts on the context. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    /** Owner name of the API key that authenticated the request. */
    owner: string;
    /** Address of the miner token that authenticated the request (routes for miners only). */
    miner: string;
  };
}

export const VERSION = "0.1.0";
