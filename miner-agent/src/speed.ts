import type { GenerationParams } from "../../shared/generation.ts";
import type { Engine } from "./engine-types.ts";

// The decode speed a miner declares at registration. The router budgets each of its precommit deadlines from it
// (twice the declared time per token, after the ack window and a prefill allowance) and penalises only a miner
// that misses that budget, so the figure should be what the miner can keep up under load: a short greedy run
// after a warm-up, divided by the tasks it runs at once (they share the same cores).

const PROBE_TOKENS = 16;
const PARAMS: GenerationParams = {
  max_tokens: PROBE_TOKENS,
  temperature: 0,
  top_p: 1,
  top_k: 0,
  presence_penalty: 0,
  frequency_penalty: 0,
  stop: [],
  seed: 0,
};

/** Tokens/s per task at full concurrency, from a measured run (one decimal); undefined if nothing could be measured. */
export async function measureSpeed(engine: Pick<Engine, "generate">, concurrency: number): Promise<number | undefined> {
  const input = { prompt: "The edge network measures its speed", prompt_type: 0 as const };
  await engine.generate({ input, params: { ...PARAMS, max_tokens: 2 } }); // warm-up: first-run costs are not decode speed
  const run = await engine.generate({ input, params: PARAMS });
  if (run.usage.completion_tokens === 0 || run.inference_ms <= 0) return undefined;
  const perTask = run.usage.completion_tokens / (run.inference_ms / 1000) / Math.max(1, concurrency);
  return Math.max(0.5, Math.round(perTask * 10) / 10);
}
