import { runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import {
  api,
  complete,
  createSession,
  errorOf,
  getSession,
  getTask,
  json,
  MinerSet,
  sessionStub,
  sleep,
  uniq,
  waitFor,
} from "./helpers.ts";

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

// Issue 12, finding 2: only a deadline the router set costs a miner reputation (the ack window, and a precommit
// budget from the speed it declared); a deadline its client set too short cuts a replica short without blame,
// and one below the task's floor is refused at once (durable-objects/session-queue/fair-deadlines.ts). The unit
// pool allows DEADLINE_PREFILL_MS 100 and DEADLINE_TOKEN_MS 2 (vitest.config.ts).
describe("fair deadlines", () => {
  const timeoutsOf = async (address: string) => {
    const { nodes } = await json<{ nodes: { address: string; reputation: { timeouts: number; tasks: number } }[] }>(
      await api("GET", "/miners"),
    );
    return nodes.find((n) => n.address === address)!.reputation;
  };

  it("refuses a deadline below the floor of the k-th fastest serving miner, naming it; one at the floor runs", async () => {
    const model = uniq("model");
    const fast = await miners.start({ models: [model], tokensPerS: 1000 });
    const slow = await miners.start({ models: [model], tokensPerS: 10 });
    const sid = await createSession({ model, redundancy: 2, max_miners: 2 });
    for (const m of [fast, slow]) await m.join(sid);
    // Two replicas: the second fastest sets the floor, 0.1 s + 20 tokens × 2 × 100 ms = 4.1 s.
    const res = await complete(sid, { prompt: "too soon", max_tokens: 20, timeout: 4 });
    expect(res.status).toBe(400);
    const err = await errorOf(res);
    expect(err.error).toMatchObject({
      code: "deadline_too_short",
      details: { field: "timeout", requested_s: 4, floor_s: 4.1, max_tokens: 20, replicas: 2 },
    });
    expect(err.error.message).toContain("4.1 s");
    // One replica: the fastest miner sets it (0.1 s + 20 × 2 × 1 ms = 0.14 s).
    const one = await errorOf(await complete(sid, { prompt: "too soon", max_tokens: 20, timeout: 0.1, max_miners: 1 }));
    expect(one.error.details).toMatchObject({ floor_s: 0.14, replicas: 1 });
    expect((await complete(sid, { prompt: "in time", max_tokens: 20, timeout: 4.1 })).status).toBe(200);
  });

  it("a replica the client's timeout cuts short within its own deadline is not penalised; a miner past its ack window is", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    // Declares 1 token/s: its precommit budget (ack window + 0.1 s + 16 × 2 s) runs far past the task's 1.5 s.
    const worker = await miners.start({ models: [model], behaviour: "hold", tokensPerS: 1 });
    const sid = await createSession({ model, ack_timeout: 0.2, task_timeout: 20 });
    await silent.join(sid);
    const pending = complete(sid, { prompt: "cut short", timeout: 1.5 });
    await silent.nextAssign(sid);
    await worker.join(sid);
    await worker.nextAssign(sid);
    const res = await pending;
    expect(res.status).toBe(504);
    const details = (await errorOf(res)).error.details as { task_id: string };
    const task = await getTask(sid, details.task_id);
    expect(task.replicas.map((r) => [r.miner, r.state])).toEqual([
      [silent.address, "timed_out"],
      [worker.address, "cancelled"],
    ]);
    await waitFor(async () => (await timeoutsOf(silent.address)).timeouts === 1, "the silent miner's timeout on record");
    await sleep(500);
    expect((await timeoutsOf(worker.address)).timeouts).toBe(0);
  });

  it("precommit_timeout replaces a replica still within its own budget, without blame", async () => {
    const model = uniq("model");
    // 10 tokens/s declared: the floor is 0.1 s + 4 × 200 ms = 0.9 s, its own budget the 5 s ack window more. A
    // precommit_timeout of 1 s is a fair deadline that still cuts this replica short within its budget.
    const slow = await miners.start({ models: [model], behaviour: "hold", tokensPerS: 10 });
    const sid = await createSession({ model, ack_timeout: 5, task_timeout: 20 });
    await slow.join(sid);
    const pending = complete(sid, { prompt: "hurry", max_tokens: 4, precommit_timeout: 1, timeout: 10 });
    const a = await slow.nextAssign(sid);
    expect(a.commit_deadline - Date.now()).toBeLessThanOrEqual(1_000);
    const other = await miners.start({ models: [model] });
    await other.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    const task = await getTask(sid, (await json(res)).task_id);
    const cut = task.replicas.find((r) => r.miner === slow.address)!;
    expect(cut.state).toBe("cancelled");
    expect(cut.reason).toMatch(/precommit_timeout/);
    await sleep(500);
    expect((await timeoutsOf(slow.address)).timeouts).toBe(0);
    await waitFor(() => slow.cancelled.has(`${sid}/${a.task_id}`), "cancel to the cut replica");
  });

  it("a miner that misses the precommit budget of its own declared speed is timed out and replaced", async () => {
    const model = uniq("model");
    // 1,000 tokens/s declared: 0.2 s ack window + 0.1 s + 16 × 2 ms, long before the client's 10 s.
    const boaster = await miners.start({ models: [model], behaviour: "hold", tokensPerS: 1000 });
    const sid = await createSession({ model, ack_timeout: 0.2, task_timeout: 20 });
    await boaster.join(sid);
    const started = Date.now();
    const pending = complete(sid, { prompt: "as fast as you said", timeout: 10 });
    await boaster.nextAssign(sid);
    const honest = await miners.start({ models: [model] });
    await honest.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(5_000);
    const task = await getTask(sid, (await json(res)).task_id);
    const missed = task.replicas.find((r) => r.miner === boaster.address)!;
    expect(missed).toMatchObject({ state: "timed_out" });
    expect(missed.reason).toMatch(/commit deadline/);
    await waitFor(async () => (await timeoutsOf(boaster.address)).timeouts === 1, "the boaster's timeout on record");
  });
});
