import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { checkedUsage, completionBound, inputFault, textByteCap } from "../../durable-objects/session-queue/miner-input.ts";
import type { OpenTask, Replica } from "../../durable-objects/session-queue/task.ts";
import { cosineDistance, distanceMatrix, judgeSimilarity, MAX_COMPONENT, wellFormed } from "../../durable-objects/similarity.ts";
import type { GenerationParams } from "../../shared/generation.ts";
import { resultHash } from "../../shared/signing.ts";
import {
  complete,
  createSession,
  getSession,
  getTask,
  json,
  MinerSet,
  readSSE,
  sessionStub,
  sleep,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

// The commit path's rules (issue 12, findings 1, 3, 4): what a miner's text and usage may be
// (session-queue/miner-input.ts), validators' vectors checked before any distance (similarity.ts), and inside
// a real SessionQueue: streamed text kept only while someone streams and bounded like a commit, commits held at
// the commit-reveal barrier across an eviction.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

const params = (over: Partial<GenerationParams> = {}): GenerationParams => ({
  max_tokens: 4,
  temperature: 0,
  top_p: 1,
  top_k: 0,
  presence_penalty: 0,
  frequency_penalty: 0,
  stop: [],
  seed: 1,
  ...over,
});

/** What the rules read of a task: its params, prompt bytes, reservation and replicas' reported usage. */
function task(usages: Record<string, { prompt_tokens: number; completion_tokens: number }>, over: Partial<OpenTask> = {}) {
  const replicas = new Map(Object.entries(usages).map(([miner, usage]) => [miner, { miner, usage } as Replica]));
  return { assign: { params: params() }, promptBytes: 10, reservedTokens: 14, replicas, ...over } as unknown as OpenTask;
}

describe("miner input bounds", () => {
  it("a task's text may be 64 bytes per token of max_tokens (or of a grammar's own length), counted in UTF-8", () => {
    expect(completionBound(params())).toBe(4);
    expect(textByteCap(params())).toBe(256);
    const grammar = { segments: [{ literal: "VERDICT: " }, { choice: ["VALID", "INVALID"] }] };
    expect(completionBound(params({ max_tokens: 2, constraint: grammar }))).toBe(9 + 7 + 1);
    const t = task({});
    const ok = { prompt_tokens: 10, completion_tokens: 4 };
    expect(inputFault(t, "a".repeat(256), ok)).toBeNull();
    expect(inputFault(t, "a".repeat(257), ok)).toMatch(/exceeds 256 bytes/);
    // 86 three-byte characters are 258 bytes: over, though 86 characters are not
    expect(inputFault(t, "€".repeat(86), ok)).toMatch(/exceeds 256 bytes/);
    expect(inputFault(t, "€".repeat(85), ok)).toBeNull();
  });

  it("usage past max_tokens, or past the prompt's bytes plus the chat-template allowance, is refused", () => {
    const t = task({});
    expect(inputFault(t, "x", { prompt_tokens: 10, completion_tokens: 5 })).toBe("usage claims 5 completion tokens; the task allows 4");
    expect(inputFault(t, "x", { prompt_tokens: 10 + 4096, completion_tokens: 4 })).toBeNull();
    expect(inputFault(t, "x", { prompt_tokens: 2 ** 53 - 1, completion_tokens: 4 })).toMatch(/prompt tokens; a 10-byte prompt allows 4106/);
  });

  it("the charge: the fewest tokens the agreeing replicas report, prompt within its bytes, total within the reservation", () => {
    const agreed = { status: "agreed" as const, agreed: ["a", "b"] };
    expect(
      checkedUsage(task({ a: { prompt_tokens: 6, completion_tokens: 4 }, b: { prompt_tokens: 6, completion_tokens: 4 } }), agreed, "a"),
    ).toEqual({
      usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 },
      disputed: [],
    });
    // b inflates: a's count is charged and b is named
    expect(
      checkedUsage(task({ a: { prompt_tokens: 6, completion_tokens: 3 }, b: { prompt_tokens: 900, completion_tokens: 4 } }), agreed, "b"),
    ).toEqual({
      usage: { prompt_tokens: 6, completion_tokens: 3, total_tokens: 9 },
      disputed: ["b"],
    });
    // both beyond the prompt's 10 bytes: 10 charged; the total never above the reservation (14)
    expect(
      checkedUsage(task({ a: { prompt_tokens: 50, completion_tokens: 4 }, b: { prompt_tokens: 50, completion_tokens: 4 } }), agreed, "a")
        .usage,
    ).toEqual({
      prompt_tokens: 10,
      completion_tokens: 4,
      total_tokens: 14,
    });
    const tight = task({ a: { prompt_tokens: 10, completion_tokens: 4 } }, { reservedTokens: 12 });
    expect(checkedUsage(tight, { status: "agreed", agreed: ["a"] }, "a").usage.total_tokens).toBe(12);
    // similarity: agreeing samples differ in length, so the completion is the chosen text's own count
    const sim = task({ a: { prompt_tokens: 6, completion_tokens: 4 }, b: { prompt_tokens: 6, completion_tokens: 2 } });
    Object.assign(sim.replicas.get("a")!, { hash: "0xa" });
    Object.assign(sim.replicas.get("b")!, { hash: "0xb" });
    expect(checkedUsage(sim, agreed, "a")).toEqual({ usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 }, disputed: [] });
    // without a quorum, the chosen replica's report alone (bounded the same way)
    const single = checkedUsage(
      task({ a: { prompt_tokens: 3, completion_tokens: 2 }, b: { prompt_tokens: 1, completion_tokens: 1 } }),
      { status: "no_quorum", agreed: ["a"] },
      "a",
    );
    expect(single.usage.total_tokens).toBe(5);
  });
});

describe("validator vectors are checked before any distance", () => {
  it("huge, non-finite, tiny or mismatched vectors are malformed; distances are always within [0, 2]", () => {
    const ok = [
      [1, 0, 0],
      [0, 1, 0],
    ];
    expect(wellFormed(ok, 2)).toBe(true);
    expect(wellFormed(ok, 2, 3)).toBe(true);
    expect(wellFormed(ok, 2, 4)).toBe(false); // another validator's dimension
    expect(
      wellFormed(
        [
          [1e300, 1e300, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(false);
    expect(
      wellFormed(
        [
          [MAX_COMPONENT, 0, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(true);
    expect(
      wellFormed(
        [
          [Number.NaN, 1, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(false);
    expect(
      wellFormed(
        [
          [Number.POSITIVE_INFINITY, 1, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(false);
    expect(
      wellFormed(
        [
          [1e-200, 1e-200, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(false);
    expect(
      wellFormed(
        [
          [1, 0],
          [1, 0, 0],
        ],
        2,
      ),
    ).toBe(false);
    expect(wellFormed([[1], [1]], 2)).toBe(false);
    expect(wellFormed(ok, 3)).toBe(false);
    // Before: 1e300 squared is Infinity, Infinity / Infinity is NaN, and judging NaN distances threw.
    const d = cosineDistance([1e200, 1e200], [1e-200, 1e-200]);
    expect(Number.isFinite(d) && d >= 0 && d <= 2).toBe(true);
    const nan = [
      [0, Number.NaN],
      [Number.NaN, 0],
    ];
    expect(() => judgeSimilarity(nan, 0.5)).not.toThrow();
    expect(judgeSimilarity(distanceMatrix(ok), 0).agreed).toHaveLength(1);
  });
});

describe("streamed text inside the SessionQueue", () => {
  /** The replica's streamed text as the SessionQueue holds it. */
  const streamedOf = (sid: string, tid: string, miner: string) =>
    runInDurableObject(sessionStub(sid), (q) => {
      const open = (q as unknown as { open: { get(id: number): OpenTask | undefined } }).open;
      return open.get(Number(tid))?.replicas.get(miner)?.streamed ?? null;
    });

  it("is not kept when nobody streams, however much a miner sends", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model });
    await m.join(sid);
    const pending = complete(sid, { prompt: "nobody streams", max_tokens: 4 });
    const a = await m.nextAssign(sid);
    m.ack(sid, a.task_id);
    m.tokens(
      sid,
      a.task_id,
      Array.from({ length: 20 }, () => "t".repeat(200_000)),
    );
    // Frames are read in order: once the precommit that follows them shows, they have all been handled.
    await m.precommit(sid, a.task_id, "done");
    await waitFor(async () => (await getTask(sid, a.task_id)).replicas[0]?.state === "precommitted", "the precommit");
    expect(await streamedOf(sid, a.task_id, m.address)).toBe("");
    m.commit(sid, a.task_id, "done", { usage: { prompt_tokens: 4, completion_tokens: 1 } });
    expect((await json(await pending)).choices[0].text).toBe("done");
  });

  it("while a client streams it is bounded like a commit: past max_tokens × 64 bytes the replica is rejected", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model });
    await m.join(sid);
    const pending = complete(sid, { prompt: "stream a little", max_tokens: 2, stream: true, timeout: 3 });
    const a = await m.nextAssign(sid);
    m.ack(sid, a.task_id);
    m.tokens(sid, a.task_id, ["x".repeat(100), "y".repeat(28)]); // 128 bytes: the cap
    await waitFor(async () => (await streamedOf(sid, a.task_id, m.address))?.length === 128, "128 bytes streamed");
    m.send(sid, { type: "token", task_id: a.task_id, seq: 2, text: "z" });
    const task = await waitFor(async () => {
      const t = await getTask(sid, a.task_id);
      return t.replicas[0]?.state === "rejected" && t;
    }, "the replica to be rejected");
    expect(task.replicas[0].reason).toBe("streamed more text than max_tokens allows");
    const events = await readSSE(await pending);
    expect(events.join("")).not.toContain("z");
  });
});

describe("the commit-reveal barrier across an eviction", () => {
  it("a commit held for a replica that has not precommitted survives eviction and is applied when it precommits", async () => {
    const model = uniq("model");
    const [a, b] = [
      await miners.start({ models: [model], behaviour: "manual" }),
      await miners.start({ models: [model], behaviour: "manual" }),
    ];
    const sid = await createSession({ model, redundancy: 2, max_miners: 2, task_timeout: 60 });
    for (const m of [a, b]) await m.join(sid);
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "held", max_tokens: 4 }, { signal: ac.signal }).catch(() => null);
    const tid = (await a.nextAssign(sid)).task_id;
    await b.nextAssign(sid);
    for (const m of [a, b]) m.ack(sid, tid);
    await a.precommit(sid, tid, "same");
    a.commit(sid, tid, "same", { usage: { prompt_tokens: 4, completion_tokens: 1 } });
    await sleep(300);
    let view = await getTask(sid, tid);
    expect(view.replicas.map((r) => r.state).sort()).toEqual(["acked", "precommitted"]);
    expect(view.results.data).toEqual([]);

    ac.abort();
    await pending;
    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    await b.precommit(sid, tid, "same");
    b.commit(sid, tid, "same", { usage: { prompt_tokens: 4, completion_tokens: 1 } });
    view = await waitForStatus(sid, tid, "closed");
    expect(view.consensus).toMatchObject({ status: "agreed", hash: resultHash("same") });
    expect(new Set(view.consensus!.agreed)).toEqual(new Set([a.address, b.address]));
    expect(view.result?.usage).toEqual({ prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 });
    expect((await getSession(sid)).usage.used).toBe(5);
  });
});
