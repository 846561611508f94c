import type { ConsensusView, TaskResult } from "../../shared/views.ts";

/**
 * Closes a task row with its verdict and charge, and records the session's new usage: the one write a closed
 * completion (task-store.ts) and a closed embedding job (embedding-store.ts) share. committed → validated →
 * closed happen together; validated_at records the consensus moment.
 */
export function closeTaskRow(
  sql: SqlStorage,
  taskId: number,
  now: number,
  block: number,
  result: TaskResult,
  consensus: ConsensusView,
  used: number,
): void {
  sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('used', ?)`, String(used));
  sql.exec(
    `UPDATE tasks SET state = 'closed', updated_at = ?, finished_at = ?, validated_at = ?, finished_block = ?, result = ?, consensus = ?,
       charged = ? WHERE id = ?`,
    now,
    now,
    now,
    block,
    JSON.stringify(result),
    JSON.stringify(consensus),
    result.usage.total_tokens,
    taskId,
  );
}
