// `cloudflare:workers` for Node: enough for the router's modules to load (test/integration/fuzz.test.ts lists
// the routes of its Hono app). Nothing here runs a Durable Object.
export class DurableObject<E = unknown> {
  protected ctx: unknown;
  protected env: E;
  constructor(ctx: unknown, env: E) {
    this.ctx = ctx;
    this.env = env;
  }
}
export const env = {};
