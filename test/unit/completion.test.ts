import { afterEach, describe, expect, it } from "vitest";
import { resultHash } from "../../shared/signing.ts";
import { MinerSet, complete, createSession, getSession, getTask, json, uniq } from "./helpers.ts";

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
