// Typed RPC stubs to the Durable Objects. The pool and the oracle are singletons; every session has its own
// queue. They live beside the objects so both the router and the objects themselves reach each other the
// same way, and nothing here depends on the Worker.
export const nodePool = (env: Env) => env.NODE_POOL.get(env.NODE_POOL.idFromName("pool"));
export const oracle = (env: Env) => env.ORACLE.get(env.ORACLE.idFromName("oracle"));
export const sessionQueue = (env: Env, sessionId: string) => env.SESSION_QUEUE.get(env.SESSION_QUEUE.idFromName(sessionId));
