import type { Env } from "../env.ts";

// Typed RPC stubs. The pool and the oracle are singletons; every session has its own queue.
export const nodePool = (env: Env) => env.NODE_POOL.get(env.NODE_POOL.idFromName("pool"));
export const oracle = (env: Env) => env.ORACLE.get(env.ORACLE.idFromName("oracle"));
export const sessionQueue = (env: Env, sessionId: string) =>
  env.SESSION_QUEUE.get(env.SESSION_QUEUE.idFromName(sessionId));
