import type { NodePool } from "../durable-objects/node-pool.ts";
import type { Oracle } from "../durable-objects/oracle.ts";
import type { SessionQueue } from "../durable-objects/session-queue.ts";

export interface Env {
  SESSION_QUEUE: DurableObjectNamespace<SessionQueue>;
  ORACLE: DurableObjectNamespace<Oracle>;
  NODE_POOL: DurableObjectNamespace<NodePool>;
  PAYLOADS: R2Bucket;
  ROUTER_NAME: string;
  ROUTER_ADDRESS?: string;
  API_KEYS: string;
  MINER_TOKEN_SECRET: string;
  DEFAULT_SESSION_ID?: string;
  DEFAULT_MODEL: string;
  DEFAULT_REDUNDANCY: string;
  DEFAULT_SESSION_DEPOSIT: string;
  BLOCK_INTERVAL_MS: string;
  HEARTBEAT_MS: string;
  ACK_TIMEOUT_MS: string;
  /** Least stake (tokens) a miner must declare to register; "0" lets anyone in. */
  MIN_STAKE?: string;
  /** Reputation score in [0,1] below which a miner with REPUTATION_MIN_TASKS tasks on record is benched. */
  REPUTATION_FLOOR?: string;
  REPUTATION_MIN_TASKS?: string;
}

/** Hono generics for the router: bindings plus what middleware puts on the context. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    /** Owner name of the API key that authenticated the request. */
    owner: string;
  };
}

export const VERSION = "0.1.0";
