import type { Engine, GenerateRequest, GenerateResult } from "./engine-types.ts";

// BENCH ONLY: an engine that does no inference. It answers every request at once with one fixed token, so a
// benchmark measures the router and the miner's protocol work (ack, sign, precommit, commit) without a model's
// CPU time. It is selected only by the miner's own `--test-engine zero-cost` flag (options.ts), never by
// anything a router, session or client sends, and it serves its own model id (ZERO_COST_MODEL): routing is by
// exact model id, so a task for a real model is never assigned to it. A miner that runs it gains nothing it
// could not get by lying about its model or output anyway — the router checks signatures and bounds, and a
// quorum of real replicas outvotes a fixed token.

/** The model id the zero-cost engine serves; the `bench/` prefix is refused by `--model` (options.ts). */
export const ZERO_COST_MODEL = "bench/zero-cost";
/** What it answers: one token, whatever the prompt. */
export const ZERO_COST_TEXT = " ok";

export class ZeroCostEngine implements Engine {
  readonly model = ZERO_COST_MODEL;
  readonly device = "cpu" as const;
  readonly context = { positions: 1_000_000 };

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    if (req.signal?.aborted) throw req.signal.reason ?? new DOMException("This operation was aborted", "AbortError");
    const t0 = performance.now();
    req.onToken?.(ZERO_COST_TEXT);
    return {
      text: ZERO_COST_TEXT,
      finish_reason: "length",
      usage: { prompt_tokens: 1, completion_tokens: 1 },
      inference_ms: performance.now() - t0,
    };
  }

  async dispose(): Promise<void> {}
}
