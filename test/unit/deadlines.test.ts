import { runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { complete, createSession, errorOf, getSession, getTask, json, MinerSet, sessionStub, uniq, waitFor } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("ack deadline", () => {
  it("reassigns a task whose miner never acks, marking the silent replica timed_out (alarm fires by itself)", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 0.3, task_timeout: 20 });
    await silent.join(sid);
    const started = Date.now();
    const pending = complete(sid, { prompt: "anyone there?" });
    const first = await silent.nextAssign(sid);
    expect(first.ack_deadline - Date.now()).toBeLessThanOrEqual(300);
    const worker = await miners.start({ models: [model] });
    await worker.join(sid);

    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("answer to anyone there?");
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const task = await getTask(sid, body.task_id);
    expect(task.status).toBe("closed");
    expect(task.replicas.map((r) => [r.miner, r.state])).toEqual([
      [silent.address, "timed_out"],
      [worker.address, "committed"],
    ]);
    expect(task.replicas[0].reason).toMatch(/ack deadline/);
    // The silent miner was told to stop.
    await waitFor(() => silent.messages(sid, body.task_id).some((m) => m.type === "cancel"), "cancel to the silent miner");
  });

  it("reassigns exactly once when the session alarm is also run by hand (runDurableObjectAlarm)", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    const worker = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, ack_timeout: 0.2, task_timeout: 30 });
    await silent.join(sid);
    const pending = complete(sid, { prompt: "ping" });
    const a = await silent.nextAssign(sid);
    await worker.join(sid);
    // Past the ack deadline, run the session's alarm by hand (it may also have fired already).
    await waitFor(() => Date.now() > a.ack_deadline + 10, "the ack deadline to pass");
    await runDurableObjectAlarm(sessionStub(sid));
    const b = await worker.nextAssign(sid);
    expect(b.task_id).toBe(a.task_id);
    const t = await getTask(sid, a.task_id);
    expect(t.replicas.find((r) => r.miner === silent.address)?.state).toBe("timed_out");
    expect(t.replicas.find((r) => r.miner === worker.address)?.state).toBe("assigned");
    // A second alarm run changes nothing: one replica per miner, one assign each.
    await runDurableObjectAlarm(sessionStub(sid));
    expect(worker.assignsFor(sid)).toHaveLength(1);
    expect(silent.assignsFor(sid)).toHaveLength(1);
    expect((await getTask(sid, a.task_id)).replicas).toHaveLength(2);
    worker.ack(sid, b.task_id);
    await worker.precommit(sid, b.task_id, "pong");
    worker.commit(sid, b.task_id, "pong");
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await json(res)).choices[0].text).toBe("pong");
  });
});

describe("task deadline", () => {
  it("fails a task nobody acks with 504 timeout, and the task is persisted failed", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 5 });
    await silent.join(sid);
    const started = Date.now();
    const res = await complete(sid, { prompt: "hello?", timeout: 1 });
    const elapsed = Date.now() - started;
    expect(res.status).toBe(504);
    const err = await errorOf(res);
    expect(err.error.code).toBe("timeout");
    expect(err.request_id).toBeTruthy();
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(8_000);
    const details = err.error.details as { task_id: string; status: string };
    expect(details.status).toBe("failed");
    const task = await getTask(sid, details.task_id);
    expect(task.status).toBe("failed");
    expect(task.error?.code).toBe("timeout");
    expect(task.finished_at).not.toBeNull();
    expect(task.replicas.map((r) => r.state)).toEqual(["cancelled"]);
    await waitFor(() => silent.messages(sid, details.task_id).some((m) => m.type === "cancel"), "cancel to the miner");
  });

  it("a task still queued (no miner on the session) fails at its deadline too, and its reservation is returned", async () => {
    const model = uniq("model");
    // Online in the pool (so the router accepts the task) but never joins the session.
    await miners.start({ models: [model] });
    const sid = await createSession({ model, deposit: 1000 });
    const res = await complete(sid, { prompt: "queued forever", timeout: 0.5, max_tokens: 100 });
    expect(res.status).toBe(504);
    const err = await errorOf(res);
    expect(err.error.code).toBe("timeout");
    const s = await getSession(sid);
    expect(s.usage.reserved).toBe(0);
    expect(s.usage.used).toBe(0);
    expect(s.usage.available).toBe(1000);
  });
});
