import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { type Hex, recoverTypedDataAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { createTestRunner, type DishonestMode } from "../../miner-agent/src/dishonest.ts";
import type { GenerateRequest } from "../../miner-agent/src/engine-types.ts";
import { createLogger } from "../../miner-agent/src/log.ts";
import { Stats } from "../../miner-agent/src/stats.ts";
import { TaskRunner, type TaskRunnerOptions, type TaskSink } from "../../miner-agent/src/task-runner.ts";
import type { AssignMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitTypedData, resultHash, signingDomain } from "../../shared/signing.ts";

// The test-only dishonest modes at the task runner, with a fake engine: each lies exactly as documented, and
// a runner without one (every real miner) is untouched. The real processes are in cheats.test.ts.

const HONEST_TEXT = " the honest answer";
const account = privateKeyToAccount(generatePrivateKey());
/** The domain the runner signs for (the agent takes it from its registration). */
const DOMAIN = signingDomain({ name: "test-router", chain_id: 31337, address: null });

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

/** What this miner precommits for `text` in task s1/7: its commitment (session, task, miner, result hash). */
const committed = (text: string) => commitmentHash({ session: "s1", task: "7", miner: account.address, result: resultHash(text) });

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
    domain: () => DOMAIN,
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
    ...precommitTypedData({ session: "s1", task: "7", miner: account.address, hash: p.hash as Hex }, DOMAIN),
    signature: p.signature as Hex,
  });
}

describe("test-only dishonest modes", () => {
  it("honest (no mode): true text, matching hash, own signature", async () => {
    const { sent } = await run();
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(c.text).toBe(HONEST_TEXT);
    expect(p.hash).toBe(committed(HONEST_TEXT));
    expect(await signer(p)).toBe(account.address);
  });

  it("junk: skips the engine; random text, yet hash and signature are consistent", async () => {
    const { sent, engineCalls } = await run("junk");
    expect(engineCalls).toBe(0);
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(c.text).not.toBe(HONEST_TEXT);
    expect(c.text.trim().split(/\s+/)).toHaveLength(4);
    expect(p.hash).toBe(committed(c.text));
    expect(await signer(p)).toBe(account.address);
  });

  it("bad-commit: precommits the true hash, commits other text of the same length", async () => {
    const { sent } = await run("bad-commit");
    const p = pick(sent, "precommit")!;
    const c = pick(sent, "commit")!;
    expect(p.hash).toBe(committed(HONEST_TEXT));
    expect(c.text).not.toBe(HONEST_TEXT);
    expect(c.text).toHaveLength(HONEST_TEXT.length);
    expect(committed(c.text)).not.toBe(p.hash);
  });

  it("replay-signature: true text and hash, signed by another key", async () => {
    const { sent } = await run("replay-signature");
    const p = pick(sent, "precommit")!;
    expect(p.hash).toBe(committed(pick(sent, "commit")!.text));
    const who = await signer(p);
    expect(who).not.toBe(account.address);
  });

  it("silent-after-ack: acks, then sends nothing", async () => {
    const { sent, engineCalls } = await run("silent-after-ack");
    expect(sent.map((m) => m.type)).toEqual(["ack"]);
    expect(engineCalls).toBe(0);
  });

  it("usage-inflate: the honest text, committed to, with 2^53 − 1 tokens claimed", async () => {
    const { sent } = await run("usage-inflate");
    const c = pick(sent, "commit")!;
    expect(c.text).toBe(HONEST_TEXT);
    expect(pick(sent, "precommit")!.hash).toBe(committed(HONEST_TEXT));
    expect(c.usage).toEqual({ prompt_tokens: 2 ** 53 - 1, completion_tokens: 2 ** 53 - 1 });
  });

  it("oversize: commits 100 × what max_tokens allows, correctly committed to", async () => {
    const { sent } = await run("oversize");
    const c = pick(sent, "commit")!;
    expect(c.text.startsWith(HONEST_TEXT)).toBe(true);
    expect(c.text).toHaveLength(100 * 4 * 64);
    expect(pick(sent, "precommit")!.hash).toBe(committed(c.text));
  });

  it("wrong-model: leaves the task path honest (the engine is swapped at load)", async () => {
    const { sent } = await run("wrong-model");
    expect(pick(sent, "commit")!.text).toBe(HONEST_TEXT);
  });
});

describe("copy, against a fake router's task routes", () => {
  /** Serves the task (GET /api/v1/tasks/s1/7) and the session's list as `view()` says; records each read. */
  async function fakeRouter(view: () => object) {
    const reads: string[] = [];
    const server = createServer((req, res) => {
      reads.push(`${req.headers.authorization} ${req.url}`);
      const body = req.url?.startsWith("/api/v1/tasks/s1/7") ? view() : { tasks: [{ task_id: "7", ...view() }] };
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, reads, close: () => server.close() };
  }

  /** Runs one copy task until it commits (or `ms` more than its deadline passes). */
  async function runCopy(routerUrl: string, deadlineMs: number): Promise<{ sent: SessionMinerMessage[]; engineCalls: number }> {
    const sent: SessionMinerMessage[] = [];
    let engineCalls = 0;
    const sink: TaskSink = {
      sessionId: "s1",
      send: (m) => sent.push(m) > 0,
      deliver: (m) => void sent.push(m),
      hasPending: () => false,
      dropTask: () => {},
    };
    const runner = createTestRunner(
      {
        engine: {
          model: "edge/tiny-gpt2",
          generate: async () => {
            engineCalls++;
            throw new Error("the copier runs no model");
          },
        },
        account,
        domain: () => DOMAIN,
        concurrency: 1,
        log: createLogger({ format: "json", write: () => {} }),
        stats: new Stats(),
      },
      { mode: "copy", routerUrl, copyApiKey: "owner-key" },
    );
    runner.submit(sink, { ...assign, commit_deadline: Date.now() + deadlineMs });
    const until = Date.now() + deadlineMs + 2_000;
    while (!pick(sent, "commit") && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return { sent, engineCalls };
  }

  const sealed = { status: "precommitted", results: { data: [], miners: [] }, result: null, replicas: [] };

  it("copies another replica's text as soon as a route shows it, committing to it as its own", async () => {
    const shownAt = Date.now() + 300;
    const other = "0x00000000000000000000000000000000000000bb";
    const router = await fakeRouter(() =>
      Date.now() < shownAt ? sealed : { ...sealed, results: { data: ["the other's answer"], miners: [other] } },
    );
    try {
      const { sent, engineCalls } = await runCopy(router.url, 5_000);
      expect(engineCalls).toBe(0);
      expect(pick(sent, "commit")!.text).toBe("the other's answer");
      expect(pick(sent, "precommit")!.hash).toBe(committed("the other's answer"));
      expect(await signer(pick(sent, "precommit")!)).toBe(account.address);
      expect(router.reads).toContain("Bearer owner-key /api/v1/tasks/s1/7");
      expect(router.reads.some((r) => r.startsWith("Bearer owner-key /api/v1/tasks/s1?"))).toBe(true);
    } finally {
      router.close();
    }
  });

  it("finding nothing (a sealed view), it guesses shortly before its deadline", async () => {
    const router = await fakeRouter(() => sealed);
    try {
      const t0 = Date.now();
      const { sent } = await runCopy(router.url, 1_500);
      expect(pick(sent, "commit")!.text).toMatch(/^guess /);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
      expect(router.reads.length).toBeGreaterThan(5);
    } finally {
      router.close();
    }
  });
});
