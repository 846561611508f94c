import type { Hex } from "viem";
import { afterEach, describe, expect, it } from "vitest";
import { commitmentHash, resultHash } from "../../shared/signing.ts";
import { api, complete, createSession, getTask, json, MinerSet, sleep, uniq, waitFor, waitForStatus } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("the persisted task state machine", () => {
  it("moves queued → assigned → acked → precommitted → committed → closed, one step per miner message", async () => {
    const model = uniq("model");
    // Three replicas (quorum 2), so `committed` is observable: two commits that disagree leave the task
    // committed but unsettled until the third breaks the tie.
    const [a, b, c] = [
      await miners.start({ models: [model], behaviour: "manual" }),
      await miners.start({ models: [model], behaviour: "manual" }),
      await miners.start({ models: [model], behaviour: "manual" }),
    ];
    const sid = await createSession({ model, redundancy: 3, max_miners: 3, ack_timeout: 30, task_timeout: 60 });
    // The miners are online in the pool but not yet on the session: the task waits in the queue.
    const pending = complete(sid, { prompt: "step by step" });
    const tid = await waitFor(async () => {
      const res = await api("GET", `/tasks/${sid}`);
      const list = await json(res);
      return list.tasks?.[0]?.task_id as string | undefined;
    }, "the task to be queued");
    let task = await getTask(sid, tid);
    expect(task.status).toBe("queued");
    expect(task.replicas).toEqual([]);

    for (const m of [a, b, c]) await m.join(sid);
    for (const m of [a, b, c]) await m.nextAssign(sid);
    task = await waitForStatus(sid, tid, "assigned");
    expect(task.replicas.map((r) => r.state)).toEqual(["assigned", "assigned", "assigned"]);
    expect(new Set(task.assigned_miners)).toEqual(new Set([a.address, b.address, c.address]));

    // One ack is not a quorum of three.
    a.ack(sid, tid);
    await waitFor(async () => (await getTask(sid, tid)).replicas.find((r) => r.miner === a.address)?.state === "acked", "a acked");
    expect((await getTask(sid, tid)).status).toBe("assigned");
    b.ack(sid, tid);
    task = await waitForStatus(sid, tid, "acked");
    c.ack(sid, tid);

    const good = "forty-two";
    const odd = "forty-three";
    await a.precommit(sid, tid, good);
    await waitFor(
      async () => (await getTask(sid, tid)).replicas.find((r) => r.miner === a.address)?.state === "precommitted",
      "a precommitted",
    );
    expect((await getTask(sid, tid)).status).toBe("acked");
    await b.precommit(sid, tid, odd);
    task = await waitForStatus(sid, tid, "precommitted");
    // While the task runs its view is sealed: no commitment, hash or signature of any replica.
    for (const r of task.replicas) expect([r.commitment, r.hash, r.signature]).toEqual([null, null, null]);

    // The commit-reveal barrier: a's commit arrives before c has precommitted, so it is held (a still reads
    // precommitted) until c's commitment is in; then it counts.
    a.commit(sid, tid, good);
    await sleep(300);
    expect((await getTask(sid, tid)).replicas.find((r) => r.miner === a.address)?.state).toBe("precommitted");
    await c.precommit(sid, tid, good);
    await waitFor(async () => (await getTask(sid, tid)).replicas.find((r) => r.miner === a.address)?.state === "committed", "a committed");
    expect((await getTask(sid, tid)).status).toBe("precommitted");
    b.commit(sid, tid, odd);
    task = await waitForStatus(sid, tid, "committed");
    expect(task.result).toBeNull();
    expect(task.finished_at).toBeNull();
    expect(task.results).toEqual({ data: [], miners: [] });

    c.commit(sid, tid, good);
    task = await waitForStatus(sid, tid, "closed");
    expect(task.result?.text).toBe(good);
    expect(task.consensus).toMatchObject({ method: "exact", status: "agreed", quorum: 2, hash: resultHash(good) });
    expect(new Set(task.consensus!.agreed)).toEqual(new Set([a.address, c.address]));
    expect(task.consensus!.outliers).toEqual([b.address]);
    expect(task.replicas.find((r) => r.miner === b.address)?.agreed).toBe(false);
    expect(task.replicas.find((r) => r.miner === a.address)?.agreed).toBe(true);
    // Finished: the evidence shows, each commitment bound to its miner (equal texts, different commitments).
    const ra = task.replicas.find((r) => r.miner === a.address)!;
    const rc = task.replicas.find((r) => r.miner === c.address)!;
    expect(ra.hash).toBe(resultHash(good));
    expect(rc.hash).toBe(resultHash(good));
    expect(ra.commitment).toBe(commitmentHash({ session: sid, task: tid, miner: a.address as Hex, result: resultHash(good) }));
    expect(rc.commitment).not.toBe(ra.commitment);
    expect(task.replicas.find((r) => r.miner === b.address)?.hash).toBe(resultHash(odd));

    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.task_id).toBe(tid);
    expect(body.choices[0].text).toBe(good);
  });

  it("a miner that hands a task back (release) is replaced", async () => {
    const model = uniq("model");
    const quitter = await miners.start({ models: [model], behaviour: "release" });
    const sid = await createSession({ model });
    await quitter.join(sid);
    const pending = complete(sid, { prompt: "who will answer?" });
    await quitter.nextAssign(sid);
    const worker = await miners.start({ models: [model] });
    await worker.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("answer to who will answer?");
    const task = await getTask(sid, body.task_id);
    expect(task.replicas.find((r) => r.miner === quitter.address)).toMatchObject({
      state: "released",
      reason: "test miner hands the task back",
    });
    expect(task.replicas.find((r) => r.miner === worker.address)?.state).toBe("committed");
  });
});
