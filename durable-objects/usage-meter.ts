import { DurableObject } from "cloudflare:workers";
import { type ReceiptRow, ReceiptStore } from "./receipt-store.ts";

// The usage of one API-key owner (`usageMeter(env, owner)` in stubs.ts): per key × model × time bucket (a minute
// and a day), the requests, charged tokens, cost, latency and failures. One object per owner, so a tenant's
// reads and writes never meet another's and one busy tenant cannot slow the others' metering. The Worker sends
// its requests' events after their answers (waitUntil), in batches (`recordMany`, workers/lib/usage-batch.ts);
// each batch is written to SQLite in one transaction before it returns, so what a crash can lose is only the
// events still in flight from a crashing isolate (up to 5 ms of them, unsent), never acknowledged ones.
//
// The owner's signed receipts ride the same batches and the same transaction (receipt-store.ts keeps them and
// moves them to R2 in bulk on this object's alarm; `receipt` reads one back for GET /api/v1/receipts/:requestId).

export type Bucket = "minute" | "day";

const SPAN: Record<Bucket, number> = { minute: 60_000, day: 86_400_000 };
/** Minute rows are kept this long (day rows stay). */
export const MINUTE_RETENTION_MS = 7 * 86_400_000;
const PRUNE_EVERY_MS = 3_600_000;
const QUERY_MAX = 10_000;

export interface UsageEvent {
  key_id: string;
  model: string;
  /** Unix ms of the request. */
  at: number;
  prompt_tokens: number;
  completion_tokens: number;
  /** µUSD. */
  cost: number;
  latency_ms: number;
  failed: boolean;
  /** Whether this event counts as a request (an in-process request's work adds tokens to its outer request's). */
  request: boolean;
}

export type UsageRow = {
  key_id: string;
  model: string;
  /** Unix ms of the bucket's start. */
  start: number;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
  latency_ms_sum: number;
  latency_ms_max: number;
  failures: number;
};

export interface UsageQuery {
  bucket: Bucket;
  from: number;
  to: number;
  key_id?: string;
  model?: string;
}

export class UsageMeter extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private prunedAt = 0;
  private readonly receipts: ReceiptStore;
  /** When the alarm is set (null: none; undefined: not read since the object woke). */
  private alarmAt: number | null | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.receipts = new ReceiptStore(ctx.storage, ctx.id.toString(), env);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS usage (bucket TEXT NOT NULL, start INTEGER NOT NULL, key_id TEXT NOT NULL,
      model TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
      cost INTEGER NOT NULL, latency_ms_sum INTEGER NOT NULL, latency_ms_max INTEGER NOT NULL, failures INTEGER NOT NULL,
      PRIMARY KEY (bucket, start, key_id, model))`);
  }

  /** Adds one request (or one in-process request's work) to its minute and day rows. */
  record(e: UsageEvent): void {
    for (const bucket of ["minute", "day"] as const) {
      const start = Math.floor(e.at / SPAN[bucket]) * SPAN[bucket];
      this.sql.exec(
        `INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (bucket, start, key_id, model) DO UPDATE SET requests = requests + excluded.requests,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens,
           cost = cost + excluded.cost, latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
           latency_ms_max = MAX(latency_ms_max, excluded.latency_ms_max), failures = failures + excluded.failures`,
        bucket,
        start,
        e.key_id,
        e.model,
        e.request ? 1 : 0,
        Math.max(0, Math.round(e.prompt_tokens)),
        Math.max(0, Math.round(e.completion_tokens)),
        Math.max(0, Math.round(e.cost)),
        e.request ? Math.max(0, Math.round(e.latency_ms)) : 0,
        e.request ? Math.max(0, Math.round(e.latency_ms)) : 0,
        e.failed ? 1 : 0,
      );
    }
    if (e.at - this.prunedAt > PRUNE_EVERY_MS) {
      this.prunedAt = e.at;
      this.sql.exec(`DELETE FROM usage WHERE bucket = 'minute' AND start < ?`, e.at - MINUTE_RETENTION_MS);
    }
  }

  /**
   * Adds a batch of requests (workers/lib/usage-batch.ts: what one isolate finished within a few milliseconds) and
   * their receipts: one call and one write transaction for them all, applied in full or not at all. Returns how many
   * receipts it stored (an isolate of the release before this sends `events` only; one of this release learns from
   * the count that a meter of the release before, which returns nothing, did not store its receipts).
   */
  async recordMany(events: UsageEvent[], receipts: ReceiptRow[] = []): Promise<number> {
    this.ctx.storage.transactionSync(() => {
      for (const e of events) this.record(e);
      this.receipts.add(receipts);
    });
    if (receipts.length > 0) await this.armAlarm(this.receipts.flushDue(Date.now()));
    return receipts.length;
  }

  /** A receipt's JSON as stored (null: unknown here, or past retention). */
  receipt(requestId: string): Promise<string | null> {
    return this.receipts.get(requestId);
  }

  /** Moves pending receipts to R2 and prunes old ones (receipt-store.ts); comes back while there is work left. */
  override async alarm(): Promise<void> {
    this.alarmAt = null; // this one has fired; a batch during the awaits below may set the next
    const next = await this.receipts.alarm(Date.now());
    if (next !== null) await this.armAlarm(next);
  }

  /** The alarm at `at` at the latest (an earlier one stays): one storage read per life of the object, not per batch. */
  private async armAlarm(at: number): Promise<void> {
    if (this.alarmAt === undefined) {
      const set = await this.ctx.storage.getAlarm();
      if (this.alarmAt === undefined) this.alarmAt = set; // another batch may have armed it while this one read
    }
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  /** Rows whose bucket starts in [from, to), oldest first. */
  query(q: UsageQuery): UsageRow[] {
    const where = ["bucket = ?", "start >= ?", "start < ?"];
    const args: (string | number)[] = [q.bucket, Math.floor(q.from / SPAN[q.bucket]) * SPAN[q.bucket], q.to];
    for (const col of ["key_id", "model"] as const) {
      if (q[col] === undefined) continue;
      where.push(`${col} = ?`);
      args.push(q[col]);
    }
    return this.sql
      .exec<UsageRow & { bucket: string }>(
        `SELECT * FROM usage WHERE ${where.join(" AND ")} ORDER BY start, key_id, model LIMIT ${QUERY_MAX}`,
        ...args,
      )
      .toArray()
      .map(({ bucket: _b, ...row }) => row);
  }
}
