import type { ReplicaOutcome } from "./reputation.ts";

const FLUSH_MS = 250;
const FLUSH_AT = 100;

/**
 * Buffers replica outcomes and sends them to the NodePool in batches (at most every 250 ms, or at 100), off
 * the hot path: nothing a client waits for ever awaits the pool. Reputation is bookkeeping, so a batch lost
 * with an evicted object or a failed call is logged, not retried.
 */
export class OutcomeReporter {
  private buffer: ReplicaOutcome[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly send: (batch: ReplicaOutcome[]) => Promise<unknown>;
  private readonly waitUntil: (p: Promise<unknown>) => void;

  constructor(send: (batch: ReplicaOutcome[]) => Promise<unknown>, waitUntil: (p: Promise<unknown>) => void) {
    this.send = send;
    this.waitUntil = waitUntil;
  }

  push(outcomes: ReplicaOutcome[]): void {
    if (outcomes.length === 0) return;
    this.buffer.push(...outcomes);
    if (this.buffer.length >= FLUSH_AT) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.buffer.splice(0);
    if (batch.length === 0) return;
    this.waitUntil(this.send(batch).catch((err) => console.error(`outcome report of ${batch.length} lost: ${String(err)}`)));
  }
}
