import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { resultHash } from "../../shared/signing.ts";
import { MinerSet, complete, createSession, getSession, getTask, json, sessionStub, uniq, waitFor, waitForStatus } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("SessionQueue eviction and WebSocket hibernation", () => {
  it("a task in flight survives eviction: the miner delivers over its hibernated socket and the task closes", async () => {
    const model = uniq("model");
    const text = "delivered after the eviction";
    const miner = await miners.start({ models: [model], behaviour: "hold", text: () => text, usage: () => ({ prompt_tokens: 2, completion_tokens: 4 }) });
    const sid = await createSession({ model, task_timeout: 60, ack_timeout: 5 });
    const ws = await miner.join(sid);
    const before = await getSession(sid);

    // The client's request is in flight while the object is evicted; it may end in an error, which is fine.
    const pending = complete(sid, { prompt: "survive" }).then(
      (res) => ({ status: res.status, res }),
      (err: unknown) => ({ status: -1, err }),
    );
    const a = await miner.nextAssign(sid);
    await waitForStatus(sid, a.task_id, "acked");

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    // Same client socket, still open.
    expect(miner.sockets.get(sid)).toBe(ws);
    expect(ws.readyState).toBe(WebSocket.OPEN);
    // The object rebuilt itself from SQLite: the task is still open and acked.
    const mid = await getTask(sid, a.task_id);
    expect(mid.status).toBe("acked");
    expect(mid.replicas[0]).toMatchObject({ miner: miner.address, state: "acked" });

    await miner.finish(sid, a.task_id);
    const task = await waitForStatus(sid, a.task_id, "closed");
    expect(task.result?.text).toBe(text);
    expect(task.replicas[0]).toMatchObject({ state: "committed", hash: resultHash(text) });
    // No "late"/"unknown_task" complaints: the restored object accepted the precommit and commit.
    expect(miner.messages(sid, a.task_id).filter((m) => m.type === "error")).toEqual([]);
    const after = await getSession(sid);
    expect(after.usage.used - before.usage.used).toBe(6);
    expect(after.usage.reserved).toBe(0);
    expect(after.usage.tasks_open).toBe(0);

    const outcome = await pending;
    if (outcome.status === 200) expect((await json(outcome.res!)).choices[0].text).toBe(text);
    else if (outcome.status !== -1) await outcome.res!.arrayBuffer();
  });

  it("after eviction, a new completion is assigned over the hibernated socket and completes", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model] });
    const sid = await createSession({ model });
    const ws = await miner.join(sid);
    // Warm up once so the object has run a task before it is evicted.
    expect((await complete(sid, { prompt: "one" })).status).toBe(200);

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    expect(ws.readyState).toBe(WebSocket.OPEN);
    const welcomes = miner.messages(sid).filter((m) => m.type === "welcome").length;

    const res = await complete(sid, { prompt: "two" });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("answer to two");
    // It went over the same socket: no reconnect, no second welcome.
    expect(miner.sockets.get(sid)).toBe(ws);
    expect(miner.messages(sid).filter((m) => m.type === "welcome")).toHaveLength(welcomes);
    expect(miner.assignsFor(sid).map((a) => a.input.prompt)).toEqual(["one", "two"]);
    const s = await getSession(sid);
    expect(s.usage.connected_miners).toEqual([miner.address]);
    expect(s.usage.tasks_total).toBe(2);
  });

  it("a socket closed during eviction (webSockets: close) frees the task for another miner", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], behaviour: "hold" });
    const sid = await createSession({ model, task_timeout: 60 });
    await miner.join(sid);
    const pending = complete(sid, { prompt: "lost socket" }).then((r) => r.status, () => -1);
    const a = await miner.nextAssign(sid);
    await waitForStatus(sid, a.task_id, "acked");
    await evictDurableObject(sessionStub(sid), { webSockets: "close" });
    await waitFor(() => miner.sockets.get(sid)?.readyState !== WebSocket.OPEN, "the miner's socket to close");
    const other = await miners.start({ models: [model] });
    await other.join(sid);
    // The restored object gives the old miner a grace period to reconnect, then reassigns.
    const task = await waitForStatus(sid, a.task_id, "closed", 15_000);
    expect(task.result?.miner).toBe(other.address);
    expect(task.replicas.find((r) => r.miner === miner.address)?.state).toBe("disconnected");
    await pending;
  });
});
