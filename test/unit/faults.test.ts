import type { Hex } from "viem";
import { afterEach, describe, expect, it } from "vitest";
import { commitmentHash, resultHash } from "../../shared/signing.ts";
import { complete, createSession, getSession, getTask, json, MinerSet, uniq, waitFor } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("faulty miners are replaced", () => {
  it("a miner that disconnects after acking: the task moves to another miner and completes", async () => {
    const model = uniq("model");
    const flaky = await miners.start({ models: [model], behaviour: "disconnect_after_ack" });
    const sid = await createSession({ model, ack_timeout: 10, task_timeout: 30 });
    await flaky.join(sid);
    const started = Date.now();
    const pending = complete(sid, { prompt: "do not drop me" });
    const a = await flaky.nextAssign(sid);
    await waitFor(() => !flaky.sockets.has(sid), "the flaky miner to drop");
    const worker = await miners.start({ models: [model] });
    await worker.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.task_id).toBe(a.task_id);
    expect(body.choices[0].text).toBe("answer to do not drop me");
    // Reassigned on the disconnect, not after the 10 s ack or 30 s task deadline.
    expect(Date.now() - started).toBeLessThan(5_000);
    const task = await getTask(sid, a.task_id);
    expect(task.replicas.find((r) => r.miner === flaky.address)).toMatchObject({ state: "disconnected" });
    expect(task.replicas.find((r) => r.miner === flaky.address)?.acked_at).not.toBeNull();
    expect(task.replicas.find((r) => r.miner === worker.address)?.state).toBe("committed");
    expect((await getSession(sid)).usage.connected_miners).toEqual([worker.address]);
  });

  it("a precommit signed by another key is rejected; the task completes on another miner", async () => {
    const model = uniq("model");
    const forger = await miners.start({ models: [model], behaviour: "bad_signature" });
    const sid = await createSession({ model });
    await forger.join(sid);
    const pending = complete(sid, { prompt: "sign here" });
    const a = await forger.nextAssign(sid);
    await waitFor(() => forger.messages(sid, a.task_id).some((m) => m.type === "cancel"), "cancel to the forger");
    const honest = await miners.start({ models: [model], text: () => "signed honestly" });
    await honest.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("signed honestly");
    const task = await getTask(sid, a.task_id);
    const bad = task.replicas.find((r) => r.miner === forger.address)!;
    expect(bad.state).toBe("rejected");
    expect(bad.reason).toMatch(/signature/);
    expect(bad.hash).toBeNull();
    expect(task.replicas.find((r) => r.miner === honest.address)?.state).toBe("committed");
    expect(task.result?.miner).toBe(honest.address);
  });

  it("a commit that does not match its precommitted hash is rejected; the task completes on another miner", async () => {
    const model = uniq("model");
    const cheat = await miners.start({ models: [model], behaviour: "commit_mismatch", text: () => "the promised text" });
    const sid = await createSession({ model });
    await cheat.join(sid);
    const pending = complete(sid, { prompt: "keep your word" });
    const a = await cheat.nextAssign(sid);
    await waitFor(() => cheat.messages(sid, a.task_id).some((m) => m.type === "cancel"), "cancel to the cheat");
    const honest = await miners.start({ models: [model], text: () => "kept" });
    await honest.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await json(res)).choices[0].text).toBe("kept");
    const task = await getTask(sid, a.task_id);
    const bad = task.replicas.find((r) => r.miner === cheat.address)!;
    expect(bad.state).toBe("rejected");
    expect(bad.reason).toMatch(/does not match/);
    // Its precommit was valid and stays on record as evidence: its commitment, bound to it; nothing was revealed.
    const promised = { session: sid, task: a.task_id, miner: cheat.address as Hex, result: resultHash("the promised text") };
    expect(bad.commitment).toBe(commitmentHash(promised));
    expect(bad.hash).toBeNull();
    expect(bad.committed_at).toBeNull();
    expect(task.results.miners).toEqual([honest.address]);
  });

  it("a commit without a precommit is rejected", async () => {
    const model = uniq("model");
    const hasty = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model });
    await hasty.join(sid);
    const pending = complete(sid, { prompt: "skip a step" });
    const a = await hasty.nextAssign(sid);
    hasty.ack(sid, a.task_id);
    hasty.commit(sid, a.task_id, "no precommit");
    await waitFor(() => hasty.messages(sid, a.task_id).some((m) => m.type === "cancel"), "cancel to the hasty miner");
    const honest = await miners.start({ models: [model] });
    await honest.join(sid);
    expect((await pending).status).toBe(200);
    const task = await getTask(sid, a.task_id);
    expect(task.replicas.find((r) => r.miner === hasty.address)).toMatchObject({
      state: "rejected",
      reason: "commit arrived before a precommit",
    });
  });

  it("malformed miner frames get an invalid_message error and change nothing", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model });
    const ws = await m.join(sid);
    ws.send("not json");
    ws.send(JSON.stringify({ type: "ack" }));
    await waitFor(
      () => m.messages(sid).filter((x) => x.type === "error" && x.code === "invalid_message").length === 2,
      "two invalid_message errors",
    );
    // A message for a task this miner does not hold is refused.
    m.ack(sid, "999");
    await waitFor(() => m.messages(sid).some((x) => x.type === "error" && x.code === "unknown_task"), "unknown_task error");
  });
});
