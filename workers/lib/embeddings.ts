import type { ConsensusView, TaskView } from "../../shared/views.ts";
import { ApiError } from "./api-error.ts";
import { resolveSession } from "./completion-request.ts";
import type { EmbeddingBody } from "./embedding-schemas.ts";
import { submitEmbedding, submitError } from "./submit.ts";

// Embeddings served by the network: one job in one session, embedded by k distinct miners with the session's
// embedding model and answered with the vectors a quorum of them agree on (durable-objects/session-queue/
// embedding-jobs.ts). POST /api/v1/embeddings answers this; the gateway's /openai/v1/embeddings maps onto it.

export interface EmbeddingMiner {
  miner: string;
  state: string;
  latency_ms: number | null;
  /** Its vectors' distance to the consensus (the largest over the texts); null when it did not answer. */
  distance: number | null;
  agreed: boolean | null;
  /** keccak256 of its vectors' JSON. */
  hash: string | null;
}

export interface EmbeddingResponse {
  object: "list";
  data: { object: "embedding"; index: number; embedding: number[] }[];
  model: string;
  /** Router-counted (miners report no token counts): what the session's deposit was charged. */
  usage: { prompt_tokens: number; total_tokens: number };
  task_id: string;
  task_ids: string[];
  session_id: string;
  miners: EmbeddingMiner[];
  consensus: ConsensusView | null;
  /** The finished job as GET /api/v1/tasks shows it (without repeating its vectors). */
  task: TaskView;
}

/** Runs the body's texts through the network as `owner` (the session's ownership rule applies); throws ApiError. */
export async function embedOnNetwork(env: Env, owner: string, body: EmbeddingBody, pathSessionId?: string): Promise<EmbeddingResponse> {
  const target = resolveSession(env, pathSessionId, body.session_id);
  const texts = typeof body.input === "string" ? [body.input] : body.input;
  const outcome = await submitEmbedding(env, target, {
    texts,
    model: body.model,
    max_miners: body.max_miners,
    timeout_s: body.timeout,
    owner,
  });
  if (!outcome.ok) throw submitError(outcome);
  return embeddingResponse(outcome.task);
}

/** The answer for a closed job: its agreed vectors in input order, usage, miners and verdict. */
export function embeddingResponse(task: TaskView): EmbeddingResponse {
  const vectors = task.embedding?.vectors;
  if (!vectors || !task.result) throw new ApiError("internal_error", `embedding job ${task.task_id} closed without vectors`);
  const distances = task.consensus?.embedding?.distances ?? {};
  const prompt = task.result.usage.prompt_tokens;
  return {
    object: "list",
    data: vectors.map((embedding, index) => ({ object: "embedding", index, embedding })),
    model: task.model,
    usage: { prompt_tokens: prompt, total_tokens: prompt },
    task_id: task.task_id,
    task_ids: [task.task_id],
    session_id: task.session_id,
    miners: task.replicas.map((r) => ({
      miner: r.miner,
      state: r.state,
      latency_ms: r.latency_ms,
      distance: distances[r.miner] ?? null,
      agreed: r.agreed,
      hash: r.hash,
    })),
    consensus: task.consensus,
    task: { ...task, embedding: { ...task.embedding!, vectors: null } },
  };
}
