import { describe, expect, it } from "vitest";
import { loadEngine } from "../../miner-agent/src/engine.ts";
import { HELP, parseCliArgs, UsageError } from "../../miner-agent/src/options.ts";
import { ZERO_COST_MODEL, ZERO_COST_TEXT } from "../../miner-agent/src/zero-cost-engine.ts";

// The bench-only zero-cost engine (miner-agent/src/zero-cost-engine.ts, used by bench/router.ts and
// bench/soak.ts): chosen only by the miner's own operator, and only under its own model id, so no task for a
// real model can reach it and nothing a router or client sends can switch a miner to it.

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseCliArgs(argv, env);

describe("zero-cost bench engine", () => {
  it("is selected by --test-engine (or MINER_TEST_ENGINE) alone, serves only bench/zero-cost and does no validation", () => {
    expect(parse(["--test-engine", "zero-cost"])).toMatchObject({ model: ZERO_COST_MODEL, testEngine: "zero-cost", embeddingModel: null });
    expect(parse([], { MINER_TEST_ENGINE: "zero-cost" })).toMatchObject({ model: ZERO_COST_MODEL });
    // Even with a real model named, the flag wins: the engine never answers under a real model's id.
    expect(parse(["--test-engine", "zero-cost", "--model", "edge/tiny-gpt2"]).model).toBe(ZERO_COST_MODEL);
    expect(parse([]).testEngine).toBeUndefined();
    expect(parse([]).model).toBeUndefined();
    expect(HELP).not.toContain("test-engine");
  });

  it("refuses other engines and bench/ model ids named without the flag", () => {
    expect(() => parse(["--test-engine", "fast"])).toThrow(UsageError);
    expect(() => parse(["--model", ZERO_COST_MODEL])).toThrow(UsageError);
    expect(() => parse(["--model", "bench/anything"])).toThrow(UsageError);
  });

  it("answers one fixed token at once, streamed too, and honours an abort", async () => {
    const engine = await loadEngine({ model: ZERO_COST_MODEL, device: "cpu", cacheDir: "/nonexistent" });
    expect(engine.model).toBe(ZERO_COST_MODEL);
    const tokens: string[] = [];
    const params = { max_tokens: 8, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 };
    const r = await engine.generate({ input: { prompt: "anything at all", prompt_type: 0 }, params, onToken: (t) => tokens.push(t) });
    expect(r).toMatchObject({ text: ZERO_COST_TEXT, usage: { prompt_tokens: 1, completion_tokens: 1 } });
    expect(tokens).toEqual([ZERO_COST_TEXT]);
    const ac = new AbortController();
    ac.abort(new Error("stop"));
    await expect(engine.generate({ input: { prompt: "x", prompt_type: 0 }, params, signal: ac.signal })).rejects.toThrow("stop");
  });
});
