import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { createTestRunner, prepareTestMiner } from "../../miner-agent/src/dishonest.ts";
import { createLogger } from "../../miner-agent/src/log.ts";
import { Stats } from "../../miner-agent/src/stats.ts";
import type { TaskSink } from "../../miner-agent/src/task-runner.ts";
import type { AssignMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { signingDomain } from "../../shared/signing.ts";

// The test-only slow miner (`--test-delay-ms`, MINER_TEST_DELAY_MIN_TOKENS) at the task runner, with a fake
// engine: integration files (a2a, mcp, cancel) rely on it holding long tasks and, with the threshold, on it
// answering their short ones at once.

const DELAY_MS = 1_500;
const log = createLogger({ format: "json", write: () => {} });
const assign = (task_id: string, max_tokens: number): AssignMessage => ({
  type: "assign",
  session_id: "s1",
  task_id,
  model: "edge/tiny-gpt2",
  input: { prompt: "hello", prompt_type: 0 },
  params: { max_tokens, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 1 },
  stream: false,
  ack_deadline: Date.now() + 10_000,
  commit_deadline: Date.now() + 10_000,
  block: 1,
});

/** Runs a 4-token and a 400-token task side by side; when each one's precommit left, ms after submit. */
async function precommitTimes(delayMinTokens: number | undefined): Promise<Record<string, number>> {
  const at: Record<string, number> = {};
  const t0 = Date.now();
  const sink: TaskSink = {
    sessionId: "s1",
    send: () => true,
    deliver: (m: SessionMinerMessage) => {
      if (m.type === "precommit") at[m.task_id] = Date.now() - t0;
    },
    hasPending: () => false,
    dropTask: () => {},
  };
  const runner = createTestRunner(
    {
      engine: {
        model: "edge/tiny-gpt2",
        generate: async () => ({
          text: " ok",
          finish_reason: "length",
          usage: { prompt_tokens: 1, completion_tokens: 1 },
          inference_ms: 1,
        }),
      },
      account: privateKeyToAccount(generatePrivateKey()),
      domain: () => signingDomain({ name: "test-router", chain_id: 31337, address: null }),
      concurrency: 2,
      log,
      stats: new Stats(),
    },
    { delayMs: DELAY_MS, delayMinTokens },
  );
  runner.submit(sink, assign("short", 4));
  runner.submit(sink, assign("long", 400));
  const deadline = Date.now() + 10_000;
  while (Object.keys(at).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return at;
}

describe("test-only slow miner", () => {
  afterEach(() => {
    delete process.env.MINER_TEST_DELAY_MIN_TOKENS;
  });

  it("holds every result without a threshold", async () => {
    const at = await precommitTimes(undefined);
    expect(at.short).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(at.long).toBeGreaterThanOrEqual(DELAY_MS - 5);
  });

  it("holds only tasks asking for at least the threshold's tokens", async () => {
    const at = await precommitTimes(100);
    expect(at.long).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(at.short).toBeLessThan(DELAY_MS - 5);
    expect(at.short).toBeLessThan(at.long);
  });

  it("reads the threshold from MINER_TEST_DELAY_MIN_TOKENS and refuses one that is not a whole number", async () => {
    // An honest slow miner: no cheat, so no model is built or read.
    const slow = (): Parameters<typeof prepareTestMiner>[0] => ({
      delayMs: DELAY_MS,
      model: "edge/tiny-gpt2",
      cacheDir: "/nonexistent",
      log,
    });
    process.env.MINER_TEST_DELAY_MIN_TOKENS = "100";
    const test = slow();
    await prepareTestMiner(test);
    expect(test.delayMinTokens).toBe(100);
    for (const bad of ["-1", "1.5", "ten", "1e3"]) {
      process.env.MINER_TEST_DELAY_MIN_TOKENS = bad;
      await expect(prepareTestMiner(slow())).rejects.toThrow(/MINER_TEST_DELAY_MIN_TOKENS/);
    }
  });
});
