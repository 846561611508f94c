// Which refusals of a session's miners become audit rows (workers/lib/payload-audit.ts writes them to R2). A
// miner refused for every task id it can name would otherwise write a row each: rows are kept per reason class
// — what was refused and why, never a task id — once per window, and at most a few per miner per window,
// whatever it tries. The gate lives in the SessionQueue, one step per request, so concurrent refusals cannot
// all pass a check-then-write; memory only (after an eviction a miner may write one more window's rows).

export interface AuditGateOptions {
  /** The window, ms. */
  windowMs: number;
  /** Rows per miner per window. */
  rowsPerMiner: number;
  /** Miners remembered at once (the oldest window goes first). */
  maxMiners: number;
}

export const AUDIT_WINDOW_MS = 10 * 60_000;
export const AUDIT_ROWS_PER_MINER = 8;

export class AuditGate {
  private readonly opts: AuditGateOptions;
  private readonly windows = new Map<string, { since: number; classes: Set<string> }>();

  constructor(opts: AuditGateOptions = { windowMs: AUDIT_WINDOW_MS, rowsPerMiner: AUDIT_ROWS_PER_MINER, maxMiners: 4096 }) {
    this.opts = opts;
  }

  get size(): number {
    return this.windows.size;
  }

  /** Whether to keep a row for this refusal of `miner` (`reasonClass`: action and reason class) at `now`. */
  admit(miner: string, reasonClass: string, now: number): boolean {
    let w = this.windows.get(miner);
    if (!w || now - w.since >= this.opts.windowMs) {
      this.windows.delete(miner);
      if (this.windows.size >= this.opts.maxMiners) this.windows.delete(this.windows.keys().next().value!);
      w = { since: now, classes: new Set() };
      this.windows.set(miner, w);
    }
    if (w.classes.has(reasonClass) || w.classes.size >= this.opts.rowsPerMiner) return false;
    w.classes.add(reasonClass);
    return true;
  }
}
