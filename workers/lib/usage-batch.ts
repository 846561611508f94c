import type { ReceiptRow } from "../../durable-objects/receipt-store.ts";
import { usageMeter } from "../../durable-objects/stubs.ts";
import type { UsageEvent } from "../../durable-objects/usage-meter.ts";

// Usage events and signed receipts go to their owner's UsageMeter in batches: the requests one isolate finishes
// within BATCH_MS share one RPC and one SQLite transaction instead of one each (under load, most of a request's
// metering cost; for receipts, an R2 put and a subrequest per answer before). Every request's waitUntil holds the
// flush that carries its events and receipt, so the runtime keeps the isolate alive until they are written; what a
// crash can lose is what it could lose before (what a crashing isolate had not yet written), now for at most
// BATCH_MS longer. A failed batch is reported to every request in it.

/** How long the first item of a batch waits for others; the answer has been sent by then (waitUntil). */
const BATCH_MS = 5;
/** A batch is sent at once when it holds this many events, or this many receipts. */
const BATCH_MAX = 64;

interface Batch {
  events: UsageEvent[];
  receipts: ReceiptRow[];
  /** Resolves with what the meter answered: the receipts it stored (a meter of the release before: nothing). */
  sent: Promise<unknown>;
  send: () => void;
}

/** Open batches by owner, per isolate and per `env` (a test's own bindings never join another's batch). */
const openByEnv = new WeakMap<Env, Map<string, Batch>>();

function openBatches(env: Env): Map<string, Batch> {
  let open = openByEnv.get(env);
  if (!open) {
    open = new Map();
    openByEnv.set(env, open);
  }
  return open;
}

/** Queues `events` for `owner`'s meter; resolves once the batch carrying them is written (rejects if it failed). */
export async function meterUsage(env: Env, owner: string, events: UsageEvent[]): Promise<void> {
  await enqueue(env, owner, events, null);
}

/**
 * Queues a signed receipt for `owner`'s meter (durable-objects/receipt-store.ts); resolves once the batch carrying it
 * is written, rejects if it failed or the meter did not store it (one of the release before, during a deploy).
 */
export async function storeReceiptBatched(env: Env, owner: string, row: ReceiptRow): Promise<void> {
  const stored = await enqueue(env, owner, [], row);
  if (typeof stored !== "number") throw new Error("the usage meter stores no receipts (an older release)");
}

function enqueue(env: Env, owner: string, events: UsageEvent[], receipt: ReceiptRow | null): Promise<unknown> {
  const adds = receipt ? 1 : 0;
  let batch = openBatches(env).get(owner);
  if (!batch || batch.events.length + events.length > BATCH_MAX || batch.receipts.length + adds > BATCH_MAX) {
    batch?.send();
    batch = newBatch(env, owner);
  }
  batch.events.push(...events);
  if (receipt) batch.receipts.push(receipt);
  const sent = batch.sent;
  if (batch.events.length >= BATCH_MAX || batch.receipts.length >= BATCH_MAX) batch.send();
  return sent;
}

function newBatch(env: Env, owner: string): Batch {
  let resolve!: (stored: unknown) => void;
  let reject!: (err: unknown) => void;
  const sent = new Promise<unknown>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  let done = false;
  const batch: Batch = {
    events: [],
    receipts: [],
    sent,
    send: () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const open = openBatches(env);
      if (open.get(owner) === batch) open.delete(owner);
      // Events only: called as the release before called it, so such a batch also goes to a meter of that release.
      const meter = usageMeter(env, owner);
      const call = batch.receipts.length > 0 ? meter.recordMany(batch.events, batch.receipts) : meter.recordMany(batch.events);
      call.then(resolve, reject);
    },
  };
  const timer = setTimeout(() => batch.send(), BATCH_MS);
  openBatches(env).set(owner, batch);
  return batch;
}
