import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { resultHash } from "../../shared/signing.ts";
import {
  complete,
  createSession,
  getSession,
  getTask,
  json,
  MinerSet,
  sessionStub,
  sleep,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

/**
 * Starts a completion and hands back its task once the (holding) miner has acked it. The client's request is
 * then aborted: `evictDurableObject` waits for in-flight requests to drain, and a client blocked on its
 * completion would keep the object busy until the task's deadline. (In production an eviction breaks that
 * request; the task itself lives on in SQLite, which is what these tests check.)
 */
async function inFlight(sid: string, miner: import("./helpers.ts").TestMiner, prompt: string) {
  const ac = new AbortController();
  const pending = complete(sid, { prompt }, { signal: ac.signal }).catch(() => null);
  const a = await miner.nextAssign(sid);
  await waitForStatus(sid, a.task_id, "acked");
  ac.abort();
  await pending;
  return a;
}

describe("SessionQueue eviction and WebSocket hibernation", () => {
  it("a task in flight survives eviction: the miner delivers over its hibernated socket and the task closes", async () => {
    const model = uniq("model");
    const text = "delivered after the eviction";
    const miner = await miners.start({
      models: [model],
      behaviour: "hold",
      text: () => text,
      usage: () => ({ prompt_tokens: 2, completion_tokens: 4 }),
    });
    const sid = await createSession({ model, task_timeout: 60, ack_timeout: 5 });
    const ws = await miner.join(sid);
    const before = await getSession(sid);
    const a = await inFlight(sid, miner, "survive");

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    // Same client socket, still open.
    expect(miner.sockets.get(sid)).toBe(ws);
    expect(ws.readyState).toBe(WebSocket.OPEN);
    // The object rebuilt itself from SQLite: the task is still open, still held by this miner.
    const mid = await getTask(sid, a.task_id);
    expect(["assigned", "acked"]).toContain(mid.status);
    expect(mid.replicas).toHaveLength(1);
    expect(mid.replicas[0].miner).toBe(miner.address);
    expect(["assigned", "acked"]).toContain(mid.replicas[0].state);
    expect((await getSession(sid)).usage.tasks_open).toBe(1);

    await miner.finish(sid, a.task_id);
    const task = await waitForStatus(sid, a.task_id, "closed");
    expect(task.result?.text).toBe(text);
    expect(task.replicas).toHaveLength(1);
    expect(task.replicas[0]).toMatchObject({ state: "committed", hash: resultHash(text) });
    expect(task.replicas[0].acked_at).not.toBeNull();
    // No "late"/"unknown_task" complaints: the restored object accepted the precommit and the commit.
    expect(miner.messages(sid, a.task_id).filter((m) => m.type === "error" || m.type === "cancel")).toEqual([]);
    const after = await getSession(sid);
    expect(after.usage.used - before.usage.used).toBe(6);
    expect(after.usage.reserved).toBe(0);
    expect(after.usage.tasks_open).toBe(0);
  });

  it("an acked miner that is still working when the restored object checks its deadlines is not timed out", async () => {
    const model = uniq("model");
    // It declares itself slow (1 token/s): its precommit budget outlasts the wait below (fair-deadlines.ts).
    const miner = await miners.start({ models: [model], behaviour: "hold", text: () => "slow but sure", tokensPerS: 1 });
    // A short ack window: long gone by the time the restored object runs its reconnect-grace alarm.
    const sid = await createSession({ model, task_timeout: 60, ack_timeout: 0.3 });
    await miner.join(sid);
    const a = await inFlight(sid, miner, "take your time");

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    await getTask(sid, a.task_id); // wakes the object (it also wakes by its own alarm)
    // Past the reconnect grace (3 s) and far past the ack deadline, the miner is still working.
    await sleep(3_600);
    const mid = await getTask(sid, a.task_id);
    expect(mid.replicas[0].state).not.toBe("timed_out");
    expect(mid.status).not.toBe("failed");
    // The restored object asked again (acks are not stored) and the miner re-acked over the same socket.
    expect(miner.repeats.filter((r) => r.task_id === a.task_id).length).toBeGreaterThanOrEqual(1);
    expect(mid.replicas[0].state).toBe("acked");

    await miner.finish(sid, a.task_id);
    const task = await waitForStatus(sid, a.task_id, "closed");
    expect(task.result?.text).toBe("slow but sure");
    expect(miner.messages(sid, a.task_id).filter((m) => m.type === "error" || m.type === "cancel")).toEqual([]);
  });

  it("after eviction, a new completion is assigned over the hibernated socket and completes", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model] });
    const sid = await createSession({ model });
    const ws = await miner.join(sid);
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
    expect(miner.assignsFor(sid).map((x) => x.input.prompt)).toEqual(["one", "two"]);
    const s = await getSession(sid);
    expect(s.usage.connected_miners).toEqual([miner.address]);
    expect(s.usage.tasks_total).toBe(2);
    expect(s.usage.tasks_open).toBe(0);
  });

  it("a socket closed by the eviction (webSockets: close) frees the task for another miner after the grace period", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], behaviour: "hold" });
    const sid = await createSession({ model, task_timeout: 60 });
    await miner.join(sid);
    const a = await inFlight(sid, miner, "lost socket");
    await evictDurableObject(sessionStub(sid), { webSockets: "close" });
    await waitFor(() => miner.sockets.get(sid)?.readyState !== WebSocket.OPEN, "the miner's socket to close");
    const other = await miners.start({ models: [model] });
    await other.join(sid);
    const task = await waitForStatus(sid, a.task_id, "closed", 15_000);
    expect(task.result?.miner).toBe(other.address);
    expect(task.replicas.find((r) => r.miner === miner.address)?.state).toBe("disconnected");
  });

  it("a straggler still working when the quorum closed its task is judged after an eviction too", async () => {
    const model = uniq("model");
    const honest = [await miners.start({ models: [model] }), await miners.start({ models: [model] })];
    // It precommits with the others (the commit-reveal barrier waits for that) and holds its commit.
    const slow = await miners.start({ models: [model], behaviour: "hold_commit" });
    const sid = await createSession({ model, redundancy: 3, max_miners: 3 });
    for (const m of [...honest, slow]) await m.join(sid);
    const res = await complete(sid, { prompt: "quorum first" });
    expect(res.status).toBe(200);
    const { task_id } = await json(res);
    const closed = await getTask(sid, task_id);
    expect(closed.consensus?.agreed).toHaveLength(2);
    expect(closed.replicas.find((r) => r.miner === slow.address)?.state).not.toBe("committed");

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    await slow.finish(sid, task_id);
    const task = await waitFor(async () => {
      const t = await getTask(sid, task_id);
      return t.replicas.find((r) => r.miner === slow.address)?.state === "committed" && t;
    }, "the straggler's late commit to be recorded");
    expect(task.status).toBe("closed");
    expect(task.consensus?.agreed).toHaveLength(3);
    expect(task.replicas.every((r) => r.agreed === true)).toBe(true);
  });
});
