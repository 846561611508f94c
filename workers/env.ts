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
  /** Delegate / validate session pools, comma-separated ids (v3 fans out across them; v1/v2 use the first). */
  DELEGATE_SESSION_POOL?: string;
  VALIDATE_SESSION_POOL?: string;
  /** Factcheck sessions per mode, and the retriever realtime mode asks for grounding documents. */
  FACTCHECK_STANDARD_SESSION?: string;
  FACTCHECK_REALTIME_SESSION?: string;
  FACTCHECK_RETRIEVER_URL?: string;
  /** UTF-8 bytes of material (claim, result, context, sources) one rubric prompt carries in all (default 200). */
  RUBRIC_MAX_INPUT_BYTES?: string;
  /** The hosted entry (POST /v1/completions) answers 504 `timeout` when the router takes longer (default 300000). */
  HOSTED_TIMEOUT_MS?: string;
  /** v2/v3: prompts (as JSON) larger than this many bytes go to R2 and the task carries a URN (default 65536). */
  INLINE_PAYLOAD_LIMIT?: string;
  /** v2/v3 and off-chain writes: largest request body, bytes (default 8 MiB). */
  PAYLOAD_MAX_BYTES?: string;
  /** Versioned secret seeds for payload keys, `version:hex,…` (≥ 16 bytes each); the highest version encrypts. */
  PAYLOAD_KEY_SEEDS?: string;
  /** Miners allowed payload keys: `sid:addr,addr;sid-tid:addr` (owners add more through the API). */
  PAYLOAD_ALLOWLIST?: string;
  /** Share of a miner's remaining stake taken per provable fault (default 0.1). */
  SLASH_FRACTION?: string;
  /** Feature-extraction model validators run for similarity consensus (default edge/tiny-embed). */
  EMBEDDING_MODEL?: string;
  /** Default cosine-distance threshold for similarity consensus (sessions may set their own). */
  DISPERSION_THRESHOLD?: string;
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
