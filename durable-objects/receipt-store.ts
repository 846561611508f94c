import { retentionMs } from "./session-queue/retention.ts";

// One owner's signed receipts, kept by that owner's UsageMeter (usage-meter.ts): they arrive with its usage events,
// in the same batch and the same SQLite transaction (workers/lib/usage-batch.ts), so storing a receipt costs no R2
// operation and no subrequest of its own. A receipt's body stays in SQLite only until the alarm moves the pending
// ones to R2 in bulk, as ONE object (`receipts/batches/<object id>/<first issued_at>-<random>.ndjson`, a receipt's
// JSON per line): one R2 put per owner per RECEIPT_FLUSH_MS instead of one per answer, and a heavy owner's receipts
// never fill the object's storage. Until the put has succeeded the bodies stay pending (a failed put is retried by
// the next alarm), so what is acknowledged is never lost. What stays in SQLite is an index row per receipt: where
// its line is (batch, byte offset, length), so a read fetches that one line with a ranged get.
//
// Retention as every payload: PAYLOAD_RETENTION_S from issue. A receipt past it reads as absent; the alarm deletes
// index rows past it, and a batch object once its newest receipt is past it (none of its rows is left then). The
// batch objects are known from their own table, never by listing R2.

/** A signed receipt as it is stored: its JSON (one line: JSON.stringify writes no newline). */
export type ReceiptRow = {
  request_id: string;
  /** Unix ms, the receipt's issued_at. */
  issued_at: number;
  body: string;
};

/** How long a pending receipt waits for others before the alarm moves them to R2. */
export const RECEIPT_FLUSH_MS = 10_000;
/** Pending receipts that make the alarm run at once. */
export const RECEIPT_FLUSH_AT = 256;
/** Receipts per R2 object (a backlog after an R2 outage goes in several, one alarm each). */
const OBJECT_MAX = 1024;
/** The alarm comes back at most this often only to prune. */
const PRUNE_MS = 3_600_000;

type IndexRow = { issued_at: number; body: string | null; line_at: number | null; line_len: number | null; key: string | null };

export class ReceiptStore {
  private readonly storage: DurableObjectStorage;
  private readonly sql: SqlStorage;
  private readonly objectId: string;
  /** Read at each use (a test swaps in a failing bucket). */
  env: Env;
  /** Until when a failed put holds further puts back (an R2 outage is not retried by every batch). */
  private backoffUntil = 0;

  constructor(storage: DurableObjectStorage, objectId: string, env: Env) {
    this.storage = storage;
    this.sql = storage.sql;
    this.objectId = objectId;
    this.env = env;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS receipt (request_id TEXT PRIMARY KEY, issued_at INTEGER NOT NULL, body TEXT,
      batch INTEGER, line_at INTEGER, line_len INTEGER)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS receipt_issued ON receipt (issued_at)`);
    // Pending receipts are few at any time: a partial index finds them without a scan of the week's index rows.
    this.sql.exec(`CREATE INDEX IF NOT EXISTS receipt_pending ON receipt (issued_at) WHERE body IS NOT NULL`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS receipt_batch (id INTEGER PRIMARY KEY, key TEXT NOT NULL, newest INTEGER NOT NULL)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS receipt_batch_newest ON receipt_batch (newest)`);
  }

  /**
   * Adds receipts as pending (within the caller's transaction). One stored again under its request id (an x402
   * answer's receipt with its payment) replaces the earlier one and is pending again.
   */
  add(rows: ReceiptRow[]): void {
    for (const r of rows) {
      this.sql.exec(
        `INSERT INTO receipt (request_id, issued_at, body) VALUES (?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET
           issued_at = excluded.issued_at, body = excluded.body, batch = NULL, line_at = NULL, line_len = NULL`,
        r.request_id,
        r.issued_at,
        r.body,
      );
    }
  }

  /** When the alarm should move what is pending: at once from RECEIPT_FLUSH_AT pending on, else within RECEIPT_FLUSH_MS. */
  flushDue(now: number): number {
    const pending = this.sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM (SELECT 1 FROM receipt WHERE body IS NOT NULL LIMIT ?)`, RECEIPT_FLUSH_AT)
      .one().n;
    return pending >= RECEIPT_FLUSH_AT && now >= this.backoffUntil ? now : now + RECEIPT_FLUSH_MS;
  }

  /** A receipt's JSON: pending from SQLite, moved from its line of its R2 object; null if unknown or past retention. */
  async get(requestId: string, now = Date.now()): Promise<string | null> {
    const row = this.sql
      .exec<IndexRow>(
        `SELECT r.issued_at, r.body, r.line_at, r.line_len, b.key FROM receipt r LEFT JOIN receipt_batch b ON b.id = r.batch
         WHERE r.request_id = ?`,
        requestId,
      )
      .toArray()[0];
    if (!row) return null;
    if (now - row.issued_at > retentionMs(this.env)) {
      this.sql.exec(`DELETE FROM receipt WHERE request_id = ?`, requestId);
      return null;
    }
    if (row.body !== null) return row.body;
    if (row.key === null || row.line_at === null || row.line_len === null) return null;
    const object = await this.env.PAYLOADS.get(row.key, { range: { offset: row.line_at, length: row.line_len } });
    if (!object) return null; // removed behind our back (a lifecycle rule): absent, as past retention
    const line = await object.text();
    // The offsets are this object's own; checking the id still keeps a wrong line from ever being served.
    try {
      return (JSON.parse(line) as { request_id?: unknown }).request_id === requestId ? line : null;
    } catch {
      return null;
    }
  }

  /**
   * The alarm's work: index rows past retention go, pending receipts move to one R2 object, then batch objects past
   * retention go. Returns when the alarm should come back (null: nothing left to move or prune). Never throws: a
   * failed R2 call is logged and retried.
   */
  async alarm(now: number): Promise<number | null> {
    let more = false;
    try {
      this.sql.exec(`DELETE FROM receipt WHERE issued_at < ?`, now - retentionMs(this.env));
      more = await this.flush();
      await this.pruneObjects(now);
    } catch (err) {
      console.error(`receipt store ${this.objectId}: moving or pruning receipts failed, retrying`, err);
      this.backoffUntil = now + RECEIPT_FLUSH_MS;
      return now + RECEIPT_FLUSH_MS;
    }
    if (more) return now;
    if (this.sql.exec(`SELECT 1 FROM receipt WHERE body IS NOT NULL LIMIT 1`).toArray().length > 0) return now + RECEIPT_FLUSH_MS;
    const oldest = this.sql
      .exec<{ at: number | null }>(`SELECT MIN(at) AS at FROM (SELECT MIN(issued_at) AS at FROM receipt UNION ALL
         SELECT MIN(newest) FROM receipt_batch)`)
      .one().at;
    return oldest === null ? null : Math.max(oldest + retentionMs(this.env) + 1, now + PRUNE_MS);
  }

  /** Batch objects whose newest receipt is past retention: none of their index rows is left (the alarm deleted them). */
  private async pruneObjects(now: number): Promise<void> {
    const cutoff = now - retentionMs(this.env);
    const old = this.sql
      .exec<{ id: number; key: string }>(`SELECT id, key FROM receipt_batch WHERE newest < ? LIMIT 1000`, cutoff)
      .toArray();
    if (old.length === 0) return;
    await this.env.PAYLOADS.delete(old.map((b) => b.key));
    this.sql.exec(`DELETE FROM receipt_batch WHERE id IN (${old.map((b) => b.id).join(",")})`);
  }

  /** Moves up to OBJECT_MAX pending receipts to one R2 object; returns whether more are pending. */
  private async flush(): Promise<boolean> {
    const rows = this.sql
      .exec<ReceiptRow>(`SELECT request_id, issued_at, body FROM receipt WHERE body IS NOT NULL ORDER BY issued_at LIMIT ?`, OBJECT_MAX + 1)
      .toArray();
    if (rows.length === 0) return false;
    const more = rows.length > OBJECT_MAX;
    if (more) rows.length = OBJECT_MAX;
    const enc = new TextEncoder();
    const lines = rows.map((r) => enc.encode(`${r.body}\n`));
    const data = new Uint8Array(lines.reduce((n, l) => n + l.length, 0));
    const at: number[] = [];
    lines.reduce((offset, l) => {
      data.set(l, offset);
      at.push(offset);
      return offset + l.length;
    }, 0);
    const key = `receipts/batches/${this.objectId}/${rows[0].issued_at}-${crypto.randomUUID().slice(0, 8)}.ndjson`;
    const newest = Math.max(...rows.map((r) => r.issued_at));
    // Known before the put, so an object written just before a crash is still pruned one day.
    const batch = this.sql.exec<{ id: number }>(`INSERT INTO receipt_batch (key, newest) VALUES (?, ?) RETURNING id`, key, newest).one().id;
    try {
      await this.env.PAYLOADS.put(key, data, { httpMetadata: { contentType: "application/x-ndjson" } });
    } catch (err) {
      this.sql.exec(`DELETE FROM receipt_batch WHERE id = ?`, batch);
      throw err;
    }
    this.storage.transactionSync(() => {
      rows.forEach((r, i) => {
        // `body = ?`: a receipt replaced while the put was in flight (its paid version) stays pending.
        this.sql.exec(
          `UPDATE receipt SET body = NULL, batch = ?, line_at = ?, line_len = ? WHERE request_id = ? AND body = ?`,
          batch,
          at[i],
          lines[i].length - 1,
          r.request_id,
          r.body,
        );
      });
    });
    this.backoffUntil = 0;
    return more;
  }
}
