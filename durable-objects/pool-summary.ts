// The pool's figures (/miners stats, /info and /status) as a summary kept for a moment instead of recounted on
// every call: counting reads every connected miner's row, so under a poll of /miners or /status the pool would
// pay O(miners) per call. A figure is at most SUMMARY_MS old, and at most CHANGE_MS old once a miner came or went.

export const SUMMARY_MS = 1_000;
export const CHANGE_MS = 250;

export class Summary<T> {
  private at = Number.NEGATIVE_INFINITY;
  private value: T | undefined;
  private changedAt = 0;

  /** A miner connected or left (or the figures otherwise changed). */
  changed(now: number): void {
    this.changedAt = now;
  }

  get(now: number, compute: () => T): T {
    const age = now - this.at;
    if (this.value === undefined || age >= SUMMARY_MS || (this.changedAt >= this.at && age >= CHANGE_MS)) {
      this.value = compute();
      this.at = now;
    }
    return this.value;
  }
}
