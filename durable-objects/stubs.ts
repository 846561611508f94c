// Typed RPC stubs to the Durable Objects. The pool and the oracle are singletons; every session has its own
// queue. They live beside the objects so both the router and the objects themselves reach each other the
// same way, and nothing here depends on the Worker.
/** The pool's session catalog ("pool"); a miner's registry, socket and ledger live in its shard (pool-shards.ts). */
export const nodePool = (env: Env) => env.NODE_POOL.get(env.NODE_POOL.idFromName("pool"));
export const oracle = (env: Env) => env.ORACLE.get(env.ORACLE.idFromName("oracle"));
export const sessionQueue = (env: Env, sessionId: string) => env.SESSION_QUEUE.get(env.SESSION_QUEUE.idFromName(sessionId));
/** One MCP session (durable-objects/mcp-session.ts); the prefix keeps session ids apart from owners' stream counters. */
export const mcpSession = (env: Env, sessionId: string) => env.MCP_SESSION.get(env.MCP_SESSION.idFromName(`session:${sessionId}`));
/** An owner's count of open legacy MCP streams (the same class, another role). */
export const mcpStreams = (env: Env, owner: string) => env.MCP_SESSION.get(env.MCP_SESSION.idFromName(`owner:${owner}`));
/** One API-key owner's A2A tasks (durable-objects/a2a-task-store.ts): tenancy is the object itself. */
export const a2aTasks = (env: Env, owner: string) => env.A2A_TASKS.get(env.A2A_TASKS.idFromName(owner));
/** The managed API keys (durable-objects/key-registry.ts): one object. */
export const keyRegistry = (env: Env) => env.KEY_REGISTRY.get(env.KEY_REGISTRY.idFromName("keys"));
/** One API-key owner's usage (durable-objects/usage-meter.ts). */
export const usageMeter = (env: Env, owner: string) => env.USAGE_METER.get(env.USAGE_METER.idFromName(owner));
/** One client IP bucket's trial quota (durable-objects/trial-quota.ts). */
export const trialQuota = (env: Env, bucket: string) => env.TRIAL_QUOTAS.get(env.TRIAL_QUOTAS.idFromName(`ip:${bucket}`));
/** x402 authorizations, chain-paid deposits and serialized settlements (durable-objects/payments.ts): one object. */
export const payments = (env: Env) => env.PAYMENTS.get(env.PAYMENTS.idFromName("payments"));
