import type { Failure } from "../../shared/errors.ts";
import type { ConsensusView, SessionConfig, TaskResult, TaskView } from "../../shared/views.ts";
import type { ReplicaRow, TaskRow } from "../session-schema.ts";
import { closeTaskRow } from "./close-row.ts";

// The SQL of embedding jobs (session-queue/embedding-jobs.ts): a job is a task row of kind 'embedding' (so ids,
// ownership, lists, usage and the task view are the tasks'), one replica row per miner asked, its vectors kept
// as JSON in the row's `text` once answered. Rows are written before memory changes, so an eviction loses no
// answer a miner gave.

/** What an embedding job's task row keeps of its request (JSON in `tasks.request`). */
export interface StoredEmbedding {
  embedding: { model: string; texts: string[]; tokens: number; best_effort: boolean };
}

/** A job as an evicted queue rebuilds it. */
export interface StoredJob {
  row: TaskRow;
  request: StoredEmbedding["embedding"];
  replicas: ReplicaRow[];
}

export class EmbeddingStore {
  private readonly sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.sql = sql;
  }

  insertJob(
    job: { id: number; owner: string; redundancy: number; deadline_at: number },
    request: StoredEmbedding["embedding"],
    at: { now: number; block: number; deadlineBlock: number },
  ): void {
    const stored: StoredEmbedding = { embedding: request };
    this.sql.exec(
      `INSERT INTO tasks (id, kind, state, request, redundancy, created_at, updated_at, created_block, deadline_at, deadline_block,
         reserved, stream, owner)
       VALUES (?, 'embedding', 'queued', ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
      job.id,
      JSON.stringify(stored),
      job.redundancy,
      at.now,
      at.now,
      at.block,
      job.deadline_at,
      at.deadlineBlock,
      request.tokens,
      job.owner,
    );
  }

  /** A miner's answer: its vectors and their hash, `committed`. */
  recordVectors(taskId: number, miner: string, now: number, vectors: number[][], hash: string, ms: number): void {
    this.sql.exec(
      `UPDATE replicas SET state = 'committed', committed_at = ?, hash = ?, commitment = ?, text = ?, inference_ms = ? WHERE task_id = ? AND miner = ?`,
      now,
      hash,
      hash,
      JSON.stringify(vectors),
      ms,
      taskId,
      miner,
    );
  }

  setJobState(taskId: number, state: "assigned" | "committed", now: number): void {
    this.sql.exec(`UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?`, state, now, taskId);
  }

  /**
   * Closes the job with its verdict and charge, and the session's new usage. Only the chosen answer's vectors are
   * kept (the others' hashes stay as evidence): a closed job needs no other answer again.
   */
  closeJob(taskId: number, now: number, block: number, result: TaskResult, consensus: ConsensusView, used: number): void {
    this.sql.exec(`UPDATE replicas SET text = NULL WHERE task_id = ? AND miner != ?`, taskId, result.miner);
    closeTaskRow(this.sql, taskId, now, block, result, consensus, used);
  }

  /** Open jobs, oldest first, with their replica rows. */
  unfinished(): StoredJob[] {
    const rows = this.sql
      .exec<TaskRow>(`SELECT * FROM tasks WHERE kind = 'embedding' AND state NOT IN ('closed','failed') ORDER BY id`)
      .toArray();
    return rows.map((row) => ({
      row,
      request: (JSON.parse(row.request) as StoredEmbedding).embedding,
      replicas: this.sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? ORDER BY assigned_at`, row.id).toArray(),
    }));
  }
}

/** Stand-ins for the completion fields an embedding job's view must carry (TaskView's shape). */
const NO_INPUT = { prompt: "", prompt_type: 1 } as const;
const NO_PARAMS = { max_tokens: 1, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 };

/**
 * An embedding job as clients see it (through the same ownership rule as every task). Sealed while it runs, like
 * a task: no hashes; `full` (a single-task read of a closed job) adds the agreed vectors.
 */
export function embeddingView(sql: SqlStorage, row: TaskRow, session: Pick<SessionConfig, "id">, full: boolean): TaskView {
  const req = (JSON.parse(row.request) as StoredEmbedding).embedding;
  const sealed = row.state !== "closed" && row.state !== "failed";
  const replicas = sql.exec<ReplicaRow>(`SELECT * FROM replicas WHERE task_id = ? ORDER BY assigned_at`, row.id).toArray();
  const consensus = row.consensus ? (JSON.parse(row.consensus) as ConsensusView) : null;
  const result = row.result ? (JSON.parse(row.result) as TaskResult) : null;
  const chosen = result ? replicas.find((r) => r.miner === result.miner) : undefined;
  const vectors = chosen?.text ? (JSON.parse(chosen.text) as number[][]) : null;
  return {
    task_id: String(row.id),
    session_id: session.id,
    kind: "embedding",
    status: row.state,
    model: req.model,
    input: NO_INPUT,
    params: NO_PARAMS,
    payload: null,
    stream: false,
    client_reference: row.client_reference,
    redundancy: row.redundancy,
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
    created_block: row.created_block,
    finished_block: row.finished_block,
    deadline_at: row.deadline_at,
    deadline_block: row.deadline_block,
    assigned_miners: replicas.map((r) => r.miner),
    results: { data: [], miners: sealed ? [] : replicas.filter((r) => r.state === "committed").map((r) => r.miner) },
    result,
    consensus,
    replicas: replicas.map((r) => ({
      miner: r.miner,
      state: r.state,
      assigned_at: r.assigned_at,
      assigned_block: r.assigned_block,
      acked_at: r.acked_at,
      precommitted_at: null,
      committed_at: r.committed_at,
      hash: sealed ? null : r.hash,
      commitment: sealed ? null : r.commitment,
      signature: null,
      latency_ms: r.committed_at ? r.committed_at - r.assigned_at : null,
      inference_ms: r.inference_ms,
      first_token_ms: null,
      result_urn: null,
      agreed: consensus && r.state === "committed" ? consensus.agreed.includes(r.miner) : null,
      reason: r.reason,
    })),
    error: row.error_code ? { code: row.error_code as Failure["code"], message: row.error_message ?? "" } : null,
    embedding: {
      model: req.model,
      texts: req.texts,
      prompt_tokens: req.tokens,
      dimensions: vectors?.[0]?.length ?? null,
      vectors: full ? vectors : null,
    },
  };
}
