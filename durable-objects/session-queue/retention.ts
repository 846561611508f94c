// How long a session's R2 objects live. Prompts (`payload/<sid>/<tid>/…`) and results (`result/<sid>/<tid>/…`)
// are deleted PAYLOAD_RETENTION_S after they were written, once their task is finished (an open task keeps its
// objects however old); audit rows (`audit/<sid>/…`, and `audit-dedup/<sid>/…` markers older code wrote) go the
// same age. The SessionQueue's alarm runs the sweep: armed when a task with off-chain objects ends or an audit row is
// written, re-armed for the oldest object still too young. A pass lists at most a budget of objects per alarm
// and keeps its place (prefix and last key) in the object's storage, so a session with more objects than one
// alarm handles — or many of an open task ahead of expired ones — is swept to the end. An R2 lifecycle rule
// (`wrangler r2 bucket lifecycle add`) on the same prefixes is a backstop for sessions that never wake again.

export const DEFAULT_RETENTION_S = 7 * 24 * 3600;

/** PAYLOAD_RETENTION_S when it is a positive number of seconds, else seven days. */
export function retentionMs(env: Pick<Env, "PAYLOAD_RETENTION_S">): number {
  const n = Number(env.PAYLOAD_RETENTION_S);
  return (Number.isFinite(n) && n > 0 ? n : DEFAULT_RETENTION_S) * 1000;
}

/** Where a sweep pass stands (in the object's storage): the prefix, the last key done, the soonest expiry seen. */
interface SweepState {
  prefix: number;
  after: string | null;
  next: number | null;
}

/** What the sweep keeps its place in: the Durable Object's storage. */
export interface SweepStore {
  get<T>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
}

export interface SweepLimits {
  /** Objects per list call. */
  pageSize: number;
  /** Objects listed per alarm at most: a pass over more resumes at the next alarm, from where it stopped. */
  budget: number;
}

const STATE_KEY = "retention-sweep";
/** A pass cut short by its budget continues this soon. */
const RESUME_MS = 5_000;
/** An expired object of a task still open is looked at again this much later. */
const RECHECK_MS = 60_000;

/** The task an object belongs to (prompts and results), or null (audit rows, markers). */
function taskOf(key: string): number | null {
  const m = /^(?:payload|result)\/[^/]+\/(\d+)\//.exec(key);
  return m ? Number(m[1]) : null;
}

const earliest = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));

export class Retention {
  private readonly bucket: R2Bucket;
  private readonly keepMs: number;
  private readonly store: SweepStore;
  private readonly limits: SweepLimits;
  /** When the next sweep is due; null: none known (after an eviction the next alarm sweeps once to find out). */
  private dueAt: number | null = null;
  private known = false;

  constructor(bucket: R2Bucket, keepMs: number, store: SweepStore, limits: SweepLimits = { pageSize: 1000, budget: 5000 }) {
    this.bucket = bucket;
    this.keepMs = keepMs;
    this.store = store;
    this.limits = limits;
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
    this.dueAt = null; // what is written while the sweep runs sets it again
    const next = await this.sweep(sessionId, now, isOpen);
    this.dueAt = earliest(next, this.dueAt);
    this.known = true;
    return this.dueAt;
  }

  /**
   * Deletes what expired, at most `budget` objects listed, resuming where the last sweep stopped. Returns when
   * to come back: soon when the pass is not done, else when the youngest survivor of the pass expires.
   */
  private async sweep(sessionId: string, now: number, isOpen: (taskId: number) => boolean): Promise<number | null> {
    const prefixes = [`payload/${sessionId}/`, `result/${sessionId}/`, `audit/${sessionId}/`, `audit-dedup/${sessionId}/`];
    const state = (await this.store.get<SweepState>(STATE_KEY)) ?? { prefix: 0, after: null, next: null };
    let listed = 0;
    while (state.prefix < prefixes.length) {
      if (listed >= this.limits.budget) {
        await this.store.put(STATE_KEY, state);
        return now + RESUME_MS;
      }
      const limit = Math.min(this.limits.pageSize, this.limits.budget - listed);
      const page = await this.bucket.list({ prefix: prefixes[state.prefix], limit, ...(state.after ? { startAfter: state.after } : {}) });
      listed += page.objects.length;
      const expired: string[] = [];
      for (const o of page.objects) {
        const task = taskOf(o.key);
        const expires = o.uploaded.getTime() + this.keepMs;
        if (expires <= now && (task === null || !isOpen(task))) expired.push(o.key);
        else state.next = earliest(state.next, expires > now ? expires : now + RECHECK_MS);
      }
      if (expired.length) await this.bucket.delete(expired);
      const last = page.objects.at(-1);
      if (page.truncated && last) state.after = last.key;
      else Object.assign(state, { prefix: state.prefix + 1, after: null });
    }
    await this.store.put(STATE_KEY, { prefix: 0, after: null, next: null });
    return state.next;
  }
}
