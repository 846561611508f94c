import { availableParallelism } from "node:os";

// Numbers for the pool heartbeat: process CPU (as a share of the whole machine, so it fits the 0–100 the
// protocol allows even when onnxruntime runs many threads), resident memory, and recent decode speed.

const SPEED_WINDOW = 20;

export class Stats {
  #lastCpu = process.cpuUsage();
  #lastAt = process.hrtime.bigint();
  readonly #cores = Math.max(1, availableParallelism());
  readonly #recent: { tokens: number; ms: number }[] = [];
  /** Tasks finished and their completion tokens since start (the status line and `miner-agent status`). */
  tasksDone = 0;
  tokensDone = 0;

  /** Process CPU since the previous call, in percent of all cores (0–100). */
  cpuPercent(): number {
    const now = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    const usedUs = cpu.user - this.#lastCpu.user + (cpu.system - this.#lastCpu.system);
    const wallUs = Number(now - this.#lastAt) / 1000;
    this.#lastCpu = cpu;
    this.#lastAt = now;
    if (wallUs <= 0) return 0;
    const pct = (usedUs / (wallUs * this.#cores)) * 100;
    return Math.min(100, Math.max(0, Math.round(pct * 10) / 10));
  }

  memoryMb(): number {
    return Math.round(process.memoryUsage.rss() / (1024 * 1024));
  }

  recordTask(completionTokens: number, inferenceMs: number): void {
    this.tasksDone++;
    this.tokensDone += completionTokens;
    this.#recent.push({ tokens: completionTokens, ms: inferenceMs });
    if (this.#recent.length > SPEED_WINDOW) this.#recent.shift();
  }

  /** Decode speed over the last tasks (tokens per second of inference), or undefined before the first task. */
  tokensPerSecond(): number | undefined {
    let tokens = 0;
    let ms = 0;
    for (const r of this.#recent) {
      tokens += r.tokens;
      ms += r.ms;
    }
    if (ms <= 0) return undefined;
    return Math.round((tokens / (ms / 1000)) * 10) / 10;
  }
}
