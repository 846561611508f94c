// How long a session's R2 objects live. Prompts (`payload/<sid>/<tid>/…`) and results (`result/<sid>/<tid>/…`)
// are deleted PAYLOAD_RETENTION_S after they were written, once their task is finished (an open task keeps its
// objects however old); audit rows (`audit/<sid>/…`) and their dedup markers (`audit-dedup/<sid>/…`) go the same
// age. The SessionQueue's alarm runs the sweep: armed when a task with off-chain objects ends or an audit row is
// written, re-armed for the oldest object still too young. In production an R2 lifecycle rule
// (`wrangler r2 bucket lifecycle add`) on the same prefixes is a backstop for sessions that never wake again.

export const DEFAULT_RETENTION_S = 7 * 24 * 3600;

/** PAYLOAD_RETENTION_S when it is a positive number of seconds, else seven days. */
export function retentionMs(env: Pick<Env, "PAYLOAD_RETENTION_S">): number {
  const n = Number(env.PAYLOAD_RETENTION_S);
  return (Number.isFinite(n) && n > 0 ? n : DEFAULT_RETENTION_S) * 1000;
}

/** Objects listed per sweep at most; a sweep that stops there comes back a minute later for the rest. */
const SWEEP_BUDGET = 5_000;
const CONTINUE_MS = 60_000;

/** The task an object belongs to (prompts and results), or null (audit rows, markers). */
function taskOf(key: string): number | null {
  const m = /^(?:payload|result)\/[^/]+\/(\d+)\//.exec(key);
  return m ? Number(m[1]) : null;
}

export class Retention {
  private readonly bucket: R2Bucket;
  private readonly keepMs: number;
  /** When the next sweep is due; null: none known (after an eviction the next alarm sweeps once to find out). */
  private dueAt: number | null = null;
  private known = false;

  constructor(bucket: R2Bucket, keepMs: number) {
    this.bucket = bucket;
    this.keepMs = keepMs;
  }

  /** Something was written that must go in keepMs: returns when to sweep (for the alarm). */
  written(now: number): number {
    const at = now + this.keepMs;
    this.dueAt = this.dueAt === null ? at : Math.min(this.dueAt, at);
    this.known = true;
    return this.dueAt;
  }

  /** Sweeps when due; returns when the next sweep is due (null: nothing left to expire). */
  async sweepIfDue(sessionId: string, now: number, isOpen: (taskId: number) => boolean): Promise<number | null> {
    if (this.known && (this.dueAt === null || this.dueAt > now)) return this.dueAt;
    this.dueAt = await this.sweep(sessionId, now, isOpen);
    this.known = true;
    return this.dueAt;
  }

  /** Deletes what expired; returns when the youngest survivor expires (null: none left). */
  private async sweep(sessionId: string, now: number, isOpen: (taskId: number) => boolean): Promise<number | null> {
    let next: number | null = null;
    let listed = 0;
    for (const prefix of [`payload/${sessionId}/`, `result/${sessionId}/`, `audit/${sessionId}/`, `audit-dedup/${sessionId}/`]) {
      let cursor: string | undefined;
      do {
        const page = await this.bucket.list({ prefix, cursor, limit: 1000 });
        listed += page.objects.length;
        const expired: string[] = [];
        for (const o of page.objects) {
          const task = taskOf(o.key);
          const expires = o.uploaded.getTime() + this.keepMs;
          if (expires <= now && (task === null || !isOpen(task))) expired.push(o.key);
          // An expired object of a task still open is looked at again a minute later.
          else next = Math.min(next ?? Number.POSITIVE_INFINITY, expires > now ? expires : now + CONTINUE_MS);
        }
        if (expired.length) await this.bucket.delete(expired);
        cursor = page.truncated ? page.cursor : undefined;
        if (cursor && listed >= SWEEP_BUDGET) return now + CONTINUE_MS;
      } while (cursor);
    }
    return next;
  }
}
