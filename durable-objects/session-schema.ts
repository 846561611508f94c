import type { ReplicaState, TaskState } from "../shared/task-state.ts";

// SessionQueue storage. Tasks and their replicas (one row per miner a task was given to) live in SQLite,
// so an evicted or restarted object rebuilds its in-memory view from here and loses nothing.
// Migrations only ever append: stored sessions upgrade in place when new code meets old data.
const MIGRATIONS: string[][] = [
  [
    `CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS tasks (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     state TEXT NOT NULL,
     request TEXT NOT NULL,
     redundancy INTEGER NOT NULL,
     stream INTEGER NOT NULL DEFAULT 0,
     client_reference TEXT,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     validated_at INTEGER,
     finished_at INTEGER,
     created_block INTEGER NOT NULL,
     finished_block INTEGER,
     deadline_at INTEGER NOT NULL,
     deadline_block INTEGER NOT NULL,
     reserved INTEGER NOT NULL,
     charged INTEGER,
     result TEXT,
     consensus TEXT,
     error_code TEXT,
     error_message TEXT
   )`,
    `CREATE INDEX IF NOT EXISTS tasks_open ON tasks (state) WHERE state NOT IN ('closed', 'failed')`,
    `CREATE TABLE IF NOT EXISTS replicas (
     task_id INTEGER NOT NULL,
     miner TEXT NOT NULL,
     state TEXT NOT NULL,
     assigned_at INTEGER NOT NULL,
     assigned_block INTEGER NOT NULL,
     ack_deadline INTEGER NOT NULL,
     commit_deadline INTEGER NOT NULL,
     acked_at INTEGER,
     precommitted_at INTEGER,
     committed_at INTEGER,
     hash TEXT,
     signature TEXT,
     text TEXT,
     finish_reason TEXT,
     usage TEXT,
     inference_ms REAL,
     reason TEXT,
     PRIMARY KEY (task_id, miner)
   )`,
  ],
  [`ALTER TABLE replicas ADD COLUMN first_token_ms REAL`],
  // v2/v3: the URN of a replica's off-chain result.
  [`ALTER TABLE replicas ADD COLUMN result_urn TEXT`],
  // Who submitted a task: on a shared session each key sees only its own tasks (durable-objects/tenancy.ts).
  [`ALTER TABLE tasks ADD COLUMN owner TEXT`, `CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, id)`],
  // Commit-reveal: `commitment` is what a replica precommitted (it binds the miner), `hash` its revealed result
  // hash; `held_at` marks a commit written but held at the barrier. Older rows precommitted the bare result hash.
  [
    `ALTER TABLE replicas ADD COLUMN commitment TEXT`,
    `ALTER TABLE replicas ADD COLUMN held_at INTEGER`,
    `UPDATE replicas SET commitment = hash WHERE hash IS NOT NULL`,
  ],
  // Embedding jobs (session-queue/embedding-jobs.ts) are tasks of kind 'embedding'; completions keep NULL.
  [`ALTER TABLE tasks ADD COLUMN kind TEXT`],
  // Verified sampling (session-queue/verify-round.ts): an open task's committed token ids (uint32 little-endian, or
  // a private task's sealed ones; cleared when the task finishes) and a replica's failed verification (JSON
  // evidence), so a round survives an eviction.
  [
    `ALTER TABLE replicas ADD COLUMN token_ids BLOB`,
    `ALTER TABLE replicas ADD COLUMN token_ids_sealed TEXT`,
    `ALTER TABLE replicas ADD COLUMN verify_failed TEXT`,
  ],
];

/** Runs the migrations this storage has not seen yet (the NodePool passes its own list). */
export function migrate(sql: SqlStorage, migrations: string[][] = MIGRATIONS): void {
  sql.exec(`CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY)`);
  const done = sql.exec<{ v: number | null }>(`SELECT MAX(version) AS v FROM _migrations`).one().v ?? 0;
  for (let v = done; v < migrations.length; v++) {
    for (const stmt of migrations[v]) sql.exec(stmt);
    sql.exec(`INSERT INTO _migrations (version) VALUES (?)`, v + 1);
  }
}

export interface TaskRow extends Record<string, SqlStorageValue> {
  id: number;
  /** Null on rows written before owners were recorded. */
  owner: string | null;
  state: TaskState;
  request: string;
  redundancy: number;
  stream: number;
  client_reference: string | null;
  created_at: number;
  updated_at: number;
  validated_at: number | null;
  finished_at: number | null;
  created_block: number;
  finished_block: number | null;
  deadline_at: number;
  deadline_block: number;
  reserved: number;
  charged: number | null;
  result: string | null;
  consensus: string | null;
  error_code: string | null;
  error_message: string | null;
  /** 'embedding' for an embedding job (session-queue/embedding-jobs.ts); null for a completion. */
  kind: string | null;
}

export interface ReplicaRow extends Record<string, SqlStorageValue> {
  task_id: number;
  miner: string;
  state: ReplicaState;
  assigned_at: number;
  assigned_block: number;
  ack_deadline: number;
  commit_deadline: number;
  acked_at: number | null;
  precommitted_at: number | null;
  committed_at: number | null;
  hash: string | null;
  signature: string | null;
  text: string | null;
  finish_reason: string | null;
  usage: string | null;
  inference_ms: number | null;
  first_token_ms: number | null;
  result_urn: string | null;
  reason: string | null;
  commitment: string | null;
  held_at: number | null;
  token_ids: ArrayBuffer | null;
  token_ids_sealed: string | null;
  verify_failed: string | null;
}
