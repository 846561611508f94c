import { usageMeter } from "../../durable-objects/stubs.ts";
import type { UsageEvent } from "../../durable-objects/usage-meter.ts";

// Usage events go to their owner's UsageMeter in batches: the requests one isolate finishes within BATCH_MS
// share one RPC and one SQLite transaction instead of one each (under load, most of a request's metering cost).
// Every request's waitUntil holds the flush that carries its events, so the runtime keeps the isolate alive
// until they are written; what a crash can lose is what it could lose before (events not yet written from a
// crashing isolate), now for at most BATCH_MS longer. A failed batch is reported to every request in it.

/** How long the first event of a batch waits for others; the answer has been sent by then (waitUntil). */
const BATCH_MS = 5;
/** A batch is sent at once when it holds this many events. */
const BATCH_MAX = 64;

interface Batch {
  events: UsageEvent[];
  sent: Promise<void>;
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
export function meterUsage(env: Env, owner: string, events: UsageEvent[]): Promise<void> {
  let batch = openBatches(env).get(owner);
  if (!batch || batch.events.length + events.length > BATCH_MAX) {
    batch?.send();
    batch = newBatch(env, owner);
  }
  batch.events.push(...events);
  const sent = batch.sent;
  if (batch.events.length >= BATCH_MAX) batch.send();
  return sent;
}

function newBatch(env: Env, owner: string): Batch {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const sent = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  let done = false;
  const batch: Batch = {
    events: [],
    sent,
    send: () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const open = openBatches(env);
      if (open.get(owner) === batch) open.delete(owner);
      usageMeter(env, owner).recordMany(batch.events).then(resolve, reject);
    },
  };
  const timer = setTimeout(() => batch.send(), BATCH_MS);
  openBatches(env).set(owner, batch);
  return batch;
}
