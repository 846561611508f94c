import { type Hex, recoverTypedDataAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { createTestRunner, type DishonestMode } from "../../miner-agent/src/dishonest.ts";
import type { GenerateRequest } from "../../miner-agent/src/engine-types.ts";
import { createLogger } from "../../miner-agent/src/log.ts";
import { Stats } from "../../miner-agent/src/stats.ts";
import { TaskRunner, type TaskRunnerOptions, type TaskSink } from "../../miner-agent/src/task-runner.ts";
import type { AssignMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { precommitTypedData, resultHash } from "../../shared/signing.ts";

// The test-only dishonest modes at the task runner, with a fake engine: each lies exactly as documented, and
// a runner without one (every real miner) is untouched. The real processes are in cheats.test.ts.

const HONEST_TEXT = " the honest answer";
const account = privateKeyToAccount(generatePrivateKey());

const assign: AssignMessage = {
  type: "assign",
  session_id: "s1",
  task_id: "7",
  model: "edge/tiny-gpt2",
  input: { prompt: "hello", prompt_type: 0 },
  params: { max_tokens: 4, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 1 },
  stream: false,
  ack_deadline: Date.now() + 10_000,
  commit_deadline: Date.now() + 10_000,
  block: 1,
};

async function run(mode?: DishonestMode): Promise<{ sent: SessionMinerMessage[]; engineCalls: number }> {
  const sent: SessionMinerMessage[] = [];
  let engineCalls = 0;
  const sink: TaskSink = {
    sessionId: "s1",
    send: (m) => {
      sent.push(m);
      return true;
    },
    deliver: (m) => void sent.push(m),
    hasPending: () => false,
    dropTask: () => {},
  };
  const opts: TaskRunnerOptions = {
    engine: {
      model: "edge/tiny-gpt2",
      generate: async (_req: GenerateRequest) => {
        engineCalls++;
        return { text: HONEST_TEXT, finish_reason: "length", usage: { prompt_tokens: 1, completion_tokens: 4 }, inference_ms: 1 };
      },
    },
    account,
    concurrency: 1,
    log: createLogger({ format: "json", write: () => {} }),
    stats: new Stats(),
  };
  const runner = mode ? createTestRunner(opts, { mode }) : new TaskRunner(opts);
  runner.submit(sink, assign);
  const deadline = Date.now() + 5_000;
  while (runner.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20));
  return { sent, engineCalls };
}

const pick = <T extends SessionMinerMessage["type"]>(sent: SessionMinerMessage[], type: T) =>
  sent.find((m) => m.type === type) as Extract<SessionMinerMessage, { type: T }> | undefined;

async function signer(p: Extract<SessionMinerMessage, { type: "precommit" }>) {
  return recoverTypedDataAddress({
    ...precommitTypedData({ session: "s1", task: "7", miner: account.address, hash: p.hash as Hex }),
    signature: p.signature as Hex,
  });
}

describe("test-only dishonest modes", () => {
  it("honest (no mode): true text, matching hash, own signature", async () => {
    const { sent } = await run();
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(c.text).toBe(HONEST_TEXT);
    expect(p.hash).toBe(resultHash(HONEST_TEXT));
    expect(await signer(p)).toBe(account.address);
  });

  it("junk: skips the engine; random text, yet hash and signature are consistent", async () => {
    const { sent, engineCalls } = await run("junk");
    expect(engineCalls).toBe(0);
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(c.text).not.toBe(HONEST_TEXT);
    expect(c.text.trim().split(/\s+/)).toHaveLength(4);
    expect(p.hash).toBe(resultHash(c.text));
    expect(await signer(p)).toBe(account.address);
  });

  it("bad-commit: precommits the true hash, commits other text of the same length", async () => {
    const { sent } = await run("bad-commit");
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(p.hash).toBe(resultHash(HONEST_TEXT));
    expect(c.text).not.toBe(HONEST_TEXT);
    expect(c.text).toHaveLength(HONEST_TEXT.length);
    expect(resultHash(c.text)).not.toBe(p.hash);
  });

  it("replay-signature: true text and hash, signed by another key", async () => {
    const { sent } = await run("replay-signature");
    const p = pick(sent, "precommit")!;
    expect(p.hash).toBe(resultHash(pick(sent, "commit")!.text));
    const who = await signer(p);
    expect(who).not.toBe(account.address);
  });

  it("silent-after-ack: acks, then sends nothing", async () => {
    const { sent, engineCalls } = await run("silent-after-ack");
    expect(sent.map((m) => m.type)).toEqual(["ack"]);
    expect(engineCalls).toBe(0);
  });

  it("wrong-model: leaves the task path honest (the engine is swapped at load)", async () => {
    const { sent } = await run("wrong-model");
    expect(pick(sent, "commit")!.text).toBe(HONEST_TEXT);
  });
});
