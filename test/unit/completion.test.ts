import { afterEach, describe, expect, it } from "vitest";
import { resultHash } from "../../shared/signing.ts";
import { api, complete, createSession, env, getSession, getTask, json, MinerSet, uniq } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("a completion through the router with one miner", () => {
  it("returns the committed text in OpenAI text_completion shape and closes the task", async () => {
    const model = uniq("model");
    const text = "The quick brown fox jumps over the lazy dog.";
    const usage = { prompt_tokens: 7, completion_tokens: 11 };
    const miner = await miners.start({ models: [model], text: () => text, usage: () => usage, finishReason: "length" });
    const sid = await createSession({ model });
    await miner.join(sid);
    const before = await getSession(sid);

    const res = await complete(sid, { prompt: "Say something", max_tokens: 32 });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("X-Request-ID");
    expect(requestId).toBeTruthy();
    const body = await json(res);
    expect(body.object).toBe("text_completion");
    expect(body.choices).toHaveLength(1);
    expect(body.choices[0].text).toBe(text);
    expect(body.choices[0].index).toBe(0);
    expect(body.choices[0].finish_reason).toBe("length");
    expect(body.usage).toEqual({ ...usage, total_tokens: 18 });
    expect(body.session_id).toBe(sid);
    expect(body.task_id).toMatch(/^\d+$/);
    expect(body.request_id).toBe(requestId);
    expect(body.model).toBe(model);
    expect(body.miners.map((m: { address: string }) => m.address)).toEqual([miner.address]);

    // The assign carried what the client asked for.
    const [assign] = miner.assignsFor(sid);
    expect(assign.task_id).toBe(body.task_id);
    expect(assign.input.prompt).toBe("Say something");
    expect(assign.params.max_tokens).toBe(32);
    expect(assign.stream).toBe(false);

    const task = await getTask(sid, body.task_id);
    expect(task.status).toBe("closed");
    expect(task.result?.text).toBe(text);
    expect(task.result?.hash).toBe(resultHash(text));
    expect(task.replicas).toHaveLength(1);
    const [r] = task.replicas;
    expect(r.miner).toBe(miner.address);
    expect(r.state).toBe("committed");
    expect(r.hash).toBe(resultHash(text));
    expect(r.signature).toMatch(/^0x[0-9a-f]{130}$/i);
    expect(r.acked_at).not.toBeNull();
    expect(r.precommitted_at).not.toBeNull();
    expect(r.committed_at).not.toBeNull();
    expect(typeof r.assigned_block).toBe("number");
    expect(r.assigned_block).toBeGreaterThanOrEqual(task.created_block);
    expect(typeof task.created_block).toBe("number");
    expect(task.finished_block).toBeGreaterThanOrEqual(task.created_block);
    expect(task.consensus).toMatchObject({ method: "single", status: "agreed", agreed: [miner.address] });

    const after = await getSession(sid);
    expect(after.usage.used - before.usage.used).toBe(18);
    expect(after.usage.reserved).toBe(0);
    expect(after.usage.tasks_total).toBe(1);
    expect(after.usage.tasks_open).toBe(0);
    expect(miner.errors).toEqual([]);
  });
});

describe("completions with several miners", () => {
  it("redundancy 3: every miner gets the task, the agreed result is returned with per-miner evidence", async () => {
    const model = uniq("model");
    const ms = [
      await miners.start({ models: [model], text: () => "same" }),
      await miners.start({ models: [model], text: () => "same" }),
      await miners.start({ models: [model], text: () => "different" }),
    ];
    const sid = await createSession({ model, redundancy: 3, max_miners: 3 });
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "vote" });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("same");
    expect(body.consensus).toMatchObject({ method: "exact", status: "agreed", quorum: 2, hash: resultHash("same") });
    expect(new Set(body.consensus.agreed)).toEqual(new Set([ms[0].address, ms[1].address]));
    for (const m of ms) expect(m.assignsFor(sid).map((a) => a.task_id)).toEqual([body.task_id]);
    // The outlier may or may not have committed before the quorum closed the task; if it did, it is marked.
    const task = await getTask(sid, body.task_id);
    const outlier = task.replicas.find((r) => r.miner === ms[2].address)!;
    if (outlier.state === "committed") expect(outlier.agreed).toBe(false);
    expect(task.replicas.filter((r) => r.agreed === true)).toHaveLength(2);
  });

  it("max_miners on the request caps the replicas below the session's redundancy", async () => {
    const model = uniq("model");
    const ms = [await miners.start({ models: [model] }), await miners.start({ models: [model] })];
    const sid = await createSession({ model, redundancy: 2, max_miners: 2 });
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "just one", max_miners: 1 });
    expect(res.status).toBe(200);
    const body = await json(res);
    const task = await getTask(sid, body.task_id);
    expect(task.redundancy).toBe(1);
    expect(task.replicas).toHaveLength(1);
  });

  it("many concurrent completions spread over the miners within their capacity, and all complete", async () => {
    const model = uniq("model");
    const ms = [
      await miners.start({ models: [model], capacity: 2, delayMs: 20 }),
      await miners.start({ models: [model], capacity: 2, delayMs: 20 }),
    ];
    const sid = await createSession({ model });
    for (const m of ms) await m.join(sid);
    const prompts = Array.from({ length: 10 }, (_, i) => `p${i}`);
    const results = await Promise.all(
      prompts.map((p) => complete(sid, { prompt: p }).then(async (r) => ({ status: r.status, body: await json(r) }))),
    );
    for (const [i, r] of results.entries()) {
      expect(r.status).toBe(200);
      expect(r.body.choices[0].text).toBe(`answer to ${prompts[i]}`);
    }
    expect(new Set(results.map((r) => r.body.task_id)).size).toBe(10);
    // Both miners worked, and every task went to exactly one miner.
    expect(ms.every((m) => m.assignsFor(sid).length > 0)).toBe(true);
    expect(ms.reduce((n, m) => n + m.assignsFor(sid).length, 0)).toBe(10);
    // Never more than its capacity at once, and the capacity was used.
    for (const m of ms) expect(m.maxInflight).toBeLessThanOrEqual(2);
    expect(Math.max(...ms.map((m) => m.maxInflight))).toBe(2);
    const s = await getSession(sid);
    expect(s.usage.tasks_total).toBe(10);
    expect(s.usage.tasks_open).toBe(0);
    expect(s.usage.reserved).toBe(0);
  });

  it("the session id may come in the body; the path takes precedence", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model] });
    const sid = await createSession({ model });
    await m.join(sid);
    const res = await api("POST", "/completions", { prompt: "via body", session_id: sid, max_tokens: 8 });
    expect(res.status).toBe(200);
    expect((await json(res)).session_id).toBe(sid);
  });

  it("without a session id, the default session (created on first use) serves the request", async () => {
    const m = await miners.start({ models: [env.DEFAULT_MODEL] });
    const pending = api("POST", "/completions", { prompt: "default please", max_tokens: 8 });
    await m.join(env.DEFAULT_SESSION_ID!);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.session_id).toBe(env.DEFAULT_SESSION_ID);
    expect(body.model).toBe(env.DEFAULT_MODEL);
    expect(body.choices[0].text).toBe("answer to default please");
  });
});
