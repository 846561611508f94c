import { evictDurableObject } from "cloudflare:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import type { SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, resultHash } from "../../shared/signing.ts";
import {
  complete,
  createSession,
  getSession,
  getTask,
  json,
  MinerSet,
  sessionStub,
  sleep,
  type TestMiner,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

// Protocol 2 (issue 18): a precommit may carry its commit, so the SessionQueue handles both in one event and writes
// them in one transaction. It must be exactly the two frames in a row: the commitment recorded first, the commit
// still held at the commit-reveal barrier while another replica has not precommitted, a bad half refused alone.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

type Commit = Extract<SessionMinerMessage, { type: "commit" }>;
const usage = { prompt_tokens: 4, completion_tokens: 1 };

/** The folded frame an agent sends a protocol-2 router: its signed precommit with the commit inside. */
async function folded(
  m: TestMiner,
  sid: string,
  tid: string,
  text: string,
  over: { signer?: ReturnType<typeof privateKeyToAccount>; commitTask?: string } = {},
) {
  const hash = commitmentHash({ session: sid, task: tid, miner: m.account.address, result: resultHash(text) });
  const signature = await m.sign(sid, tid, hash, over.signer);
  const commit: Commit = { type: "commit", task_id: over.commitTask ?? tid, text, finish_reason: "stop", usage, inference_ms: 1 };
  m.send(sid, { type: "precommit", task_id: tid, hash, signature, commit });
}

async function manualPair(k: number) {
  const model = uniq("model");
  const ms: TestMiner[] = [];
  for (let i = 0; i < k; i++) ms.push(await miners.start({ models: [model], behaviour: "manual" }));
  const sid = await createSession({ model, redundancy: k, max_miners: k, task_timeout: 60 });
  for (const m of ms) await m.join(sid);
  return { ms, sid };
}

describe("a precommit with its commit folded in (protocol 2)", () => {
  it("k = 1: one frame answers the client, and the task keeps the signed commitment", async () => {
    const { ms, sid } = await manualPair(1);
    const [m] = ms as [TestMiner];
    const pending = complete(sid, { prompt: "folded", max_tokens: 4 });
    const tid = (await m.nextAssign(sid)).task_id;
    m.ack(sid, tid);
    await folded(m, sid, tid, "one frame");
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await json(res)).choices[0].text).toBe("one frame");
    const view = await waitForStatus(sid, tid, "closed");
    expect(view.replicas[0]).toMatchObject({ state: "committed", hash: resultHash("one frame") });
    expect(view.replicas[0]!.commitment).toBe(
      commitmentHash({ session: sid, task: tid, miner: m.account.address, result: resultHash("one frame") }),
    );
  });

  it("k = 2: the folded commit is held at the barrier, survives eviction, and the task is charged once", async () => {
    const { ms, sid } = await manualPair(2);
    const [a, b] = ms as [TestMiner, TestMiner];
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "held", max_tokens: 4 }, { signal: ac.signal }).catch(() => null);
    const tid = (await a.nextAssign(sid)).task_id;
    await b.nextAssign(sid);
    for (const m of [a, b]) m.ack(sid, tid);
    await folded(a, sid, tid, "same");
    await sleep(300);
    let view = await getTask(sid, tid);
    // Precommitted, its commit held: b has not committed to anything, so nothing is revealed or settled.
    expect(view.status).not.toBe("closed");
    expect(view.replicas.map((r) => r.state).sort()).toEqual(["acked", "precommitted"]);
    expect(view.results.data).toEqual([]);

    ac.abort();
    await pending;
    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    await folded(b, sid, tid, "same");
    view = await waitForStatus(sid, tid, "closed");
    expect(view.consensus).toMatchObject({ status: "agreed", hash: resultHash("same") });
    expect(new Set(view.consensus!.agreed)).toEqual(new Set([a.address, b.address]));
    expect((await getSession(sid)).usage.used).toBe(5);
  });

  it("a folded commit is the frame it would be alone: one naming another task is refused there, one off its hash rejected", async () => {
    const { ms, sid } = await manualPair(1);
    const [m] = ms as [TestMiner];
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "mismatch", max_tokens: 4 }, { signal: ac.signal }).catch(() => null);
    const tid = (await m.nextAssign(sid)).task_id;
    m.ack(sid, tid);
    const other = String(Number(tid) + 1);
    await folded(m, sid, tid, "x", { commitTask: other });
    await waitFor(
      () => m.messages(sid).find((x) => x.type === "error" && x.code === "unknown_task" && x.task_id === other),
      "unknown_task",
    );
    // The precommit half stands: the replica is bound to "x" and waits for its commit.
    expect((await getTask(sid, tid)).replicas[0]!.state).toBe("precommitted");
    m.commit(sid, tid, "not x", { usage });
    await waitFor(async () => (await getTask(sid, tid)).replicas[0]!.state === "rejected", "rejected");
    expect((await getTask(sid, tid)).status).not.toBe("closed");
    ac.abort();
    await pending;
  });

  it("a folded frame whose precommit signature is another key's: the replica is rejected and its commit not applied", async () => {
    const { ms, sid } = await manualPair(1);
    const [m] = ms as [TestMiner];
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "forged", max_tokens: 4 }, { signal: ac.signal }).catch(() => null);
    const tid = (await m.nextAssign(sid)).task_id;
    m.ack(sid, tid);
    await folded(m, sid, tid, "forged", { signer: privateKeyToAccount(generatePrivateKey()) });
    await waitFor(async () => (await getTask(sid, tid)).replicas[0]!.state === "rejected", "rejected");
    const view = await getTask(sid, tid);
    expect(view.status).not.toBe("closed");
    expect(view.replicas[0]!.hash ?? null).toBeNull();
    ac.abort();
    await pending;
  });
});
