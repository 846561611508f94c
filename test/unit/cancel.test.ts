import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { MinerView } from "../../durable-objects/node-pool.ts";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import { cancelAnswer, cancelBill } from "../../durable-objects/session-queue/cancel.ts";
import type { OpenTask, Replica } from "../../durable-objects/session-queue/task.ts";
import type { TaskView } from "../../shared/views.ts";
import {
  type ApiOptions,
  api,
  complete,
  createSession,
  errorOf,
  getSession,
  getTask,
  json,
  MinerSet,
  sessionStub,
  type TestMiner,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

// Cancelling a task (POST /api/v1/tasks/:sid/:tid/cancel; durable-objects/session-queue/cancel.ts): the owner
// ends its task at once, whoever waits on it is answered `task_cancelled`, its live replicas are told to stop and
// no miner is blamed; the session pays only for work its miners proved before the cancel.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

const cancel = (sid: string, tid: string, body?: unknown, opts?: ApiOptions) => api("POST", `/tasks/${sid}/${tid}/cancel`, body, opts);

async function node(m: TestMiner): Promise<MinerView> {
  const { nodes } = await json<{ nodes: MinerView[] }>(await api("GET", "/miners"));
  return nodes.find((n) => n.address === m.address)!;
}

async function ledger(m: TestMiner): Promise<LedgerEntry[]> {
  return (await json<{ entries: LedgerEntry[] }>(await api("GET", `/miners/${m.address}/ledger`))).entries;
}

/** The SessionQueue's in-memory state of a task: open, held commits, a similarity round. */
function memory(sid: string, tid: string) {
  return runInDurableObject(sessionStub(sid), (q) => {
    const inner = q as unknown as { open: { get(id: number): OpenTask | undefined; size: number }; rounds: { has(id: number): boolean } };
    const task = inner.open.get(Number(tid));
    return {
      open: task !== undefined,
      openTasks: inner.open.size,
      held: task ? [...task.replicas.values()].filter((r) => r.held).map((r) => r.miner) : [],
      round: inner.rounds.has(Number(tid)),
    };
  });
}

const cancelSent = (m: TestMiner, sid: string, tid: string) =>
  m.messages(sid, tid).filter((x) => x.type === "cancel" && x.reason === "task_cancelled").length;
const refusedAsUnknown = (m: TestMiner, sid: string, tid: string) =>
  m.messages(sid, tid).filter((x) => x.type === "error" && x.code === "unknown_task").length;

/** Reads SSE `data:` payloads as they arrive. */
function sseReader(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const data: string[] = [];
  let ended = false;
  return {
    data,
    /** Reads until `pred` holds for what arrived (or the stream ends). */
    async until(pred: (data: string[]) => boolean): Promise<string[]> {
      while (!pred(data) && !ended) {
        const { value, done } = await reader.read();
        if (done) ended = true;
        buffered += value ?? "";
        let end: number;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          const frame = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const d = frame
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (d) data.push(d);
        }
      }
      return data;
    },
  };
}

describe("cancelling a task", () => {
  it("while it streams: 200 with the failed view, the stream ends with the task_cancelled error at once, the miner is told", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, task_timeout: 60 });
    await m.join(sid);
    const res = await complete(sid, { prompt: "stream me", stream: true, max_tokens: 64 });
    expect(res.status).toBe(200);
    const a = await m.nextAssign(sid);
    m.ack(sid, a.task_id);
    // 130 bytes reach the client: no token is longer than TEXT_BYTES_PER_TOKEN (64) bytes, so it holds ≥ 3 tokens.
    const piece = "y".repeat(130);
    m.tokens(sid, a.task_id, [piece]);
    const sse = sseReader(res);
    const first = await sse.until((d) => d.length >= 1);
    expect(JSON.parse(first[0]).choices[0].text).toBe(piece);

    const t0 = Date.now();
    const c = await cancel(sid, a.task_id, {});
    expect(c.status).toBe(200);
    const view = await json<TaskView>(c);
    expect(view).toMatchObject({ task_id: a.task_id, session_id: sid, status: "failed" });
    expect(view.error?.code).toBe("task_cancelled");
    expect(view.error?.message).toMatch(/owner cancelled it/);
    expect(view.replicas.map((r) => r.state)).toEqual(["cancelled"]);

    const data = await sse.until((d) => d.at(-1) === "[DONE]");
    expect(Date.now() - t0).toBeLessThan(5_000); // answered at once, not at the 60 s deadline
    expect(data.at(-1)).toBe("[DONE]");
    const err = JSON.parse(data.at(-2)!);
    expect(err.error.code).toBe("task_cancelled");
    expect(err.error.details).toMatchObject({ task_id: a.task_id, status: "failed" });

    await waitFor(() => cancelSent(m, sid, a.task_id) === 1, "the miner's cancel");
    // The client holds 130 bytes of the answer: charged ⌈130 / 64⌉ = 3 tokens, paid to the miner that streamed them.
    expect((await getSession(sid)).usage).toMatchObject({ used: 3, reserved: 0, tasks_open: 0 });
    const paid = await waitFor(async () => (await ledger(m)).find((e) => e.task_id === a.task_id), "the streamer's reward");
    expect(paid).toMatchObject({ kind: "reward", amount: 3, session_id: sid });
    expect(paid.reason).toMatch(/streamed/);
    const n = await node(m);
    expect(n.balance).toBe(3);
    expect(n.reputation).toMatchObject({ timeouts: 0, slashes: 0, outliers: 0, agreement_rate: null });
  });

  it("a waiting submit is answered 409 task_cancelled at once; nothing proved, nothing charged; the miner's slot is free", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual", capacity: 1 });
    const sid = await createSession({ model, task_timeout: 60 });
    await m.join(sid);
    const pending = complete(sid, { prompt: "wait for me" });
    const a = await m.nextAssign(sid);
    m.ack(sid, a.task_id);
    await waitForStatus(sid, a.task_id, "acked");

    const t0 = Date.now();
    const c = await cancel(sid, a.task_id); // no body at all
    expect(c.status).toBe(200);
    const res = await pending;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(res.status).toBe(409);
    const err = await errorOf(res);
    expect(err.error.code).toBe("task_cancelled");
    expect(err.error.details).toMatchObject({ task_id: a.task_id, status: "failed" });
    await waitFor(() => cancelSent(m, sid, a.task_id) === 1, "the miner's cancel");
    expect((await getSession(sid)).usage).toMatchObject({ used: 0, reserved: 0, tasks_open: 0 });

    // Its only slot was given back: the next task goes to it at once, and completes.
    const next = complete(sid, { prompt: "next one" });
    const b = await m.nextAssign(sid, 1);
    expect(b.task_id).not.toBe(a.task_id);
    m.ack(sid, b.task_id);
    await m.precommit(sid, b.task_id, "done");
    m.commit(sid, b.task_id, "done", { usage: { prompt_tokens: 2, completion_tokens: 1 } });
    expect((await next).status).toBe(200);

    // Late work on the cancelled task is refused like work on a task nobody has.
    await m.precommit(sid, a.task_id, "too late");
    m.commit(sid, a.task_id, "too late");
    await waitFor(() => refusedAsUnknown(m, sid, a.task_id) === 2, "both late messages refused");
    expect((await getTask(sid, a.task_id)).replicas[0].state).toBe("cancelled");

    // No blame, no pay for the cancelled task (the next task's reward shows the outcomes were reported).
    await waitFor(async () => (await ledger(m)).some((e) => e.task_id === b.task_id), "the next task's reward");
    expect((await ledger(m)).filter((e) => e.task_id === a.task_id)).toEqual([]);
    expect((await node(m)).reputation).toMatchObject({ timeouts: 0, slashes: 0, outliers: 0 });
  });

  it("while a commit is held at the barrier: the held replica is paid what it proved, the slow one is not blamed, nothing is left behind", async () => {
    const model = uniq("model");
    const fast = await miners.start({ models: [model], behaviour: "manual" });
    const slow = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, redundancy: 2, task_timeout: 60 });
    await fast.join(sid);
    await slow.join(sid);
    const pending = complete(sid, { prompt: "barrier", max_tokens: 16 });
    const a = await fast.nextAssign(sid);
    await slow.nextAssign(sid);
    const tid = a.task_id;
    fast.ack(sid, tid);
    slow.ack(sid, tid);
    await fast.precommit(sid, tid, "fast answer");
    fast.commit(sid, tid, "fast answer", { usage: { prompt_tokens: 5, completion_tokens: 7 } });
    await waitFor(async () => (await memory(sid, tid)).held.includes(fast.address), "the fast commit held at the barrier");

    const c = await cancel(sid, tid);
    expect(c.status).toBe(200);
    expect((await json<TaskView>(c)).replicas.map((r) => r.state)).toEqual(["cancelled", "cancelled"]);
    expect((await errorOf(await pending)).error.code).toBe("task_cancelled");
    expect(await memory(sid, tid)).toMatchObject({ open: false, held: [], round: false });

    // The slow replica finishes after the cancel: refused, and nothing settles the task late.
    await slow.precommit(sid, tid, "slow answer");
    slow.commit(sid, tid, "slow answer", { usage: { prompt_tokens: 5, completion_tokens: 9 } });
    await waitFor(() => refusedAsUnknown(slow, sid, tid) === 2, "the slow replica's late messages refused");
    const after = await getTask(sid, tid);
    expect(after.status).toBe("failed");
    expect(after.error?.code).toBe("task_cancelled");
    expect(after.result).toBeNull();

    // Charged the 12 tokens the held commit proved (5 prompt + 7 completion), within the reservation.
    expect((await getSession(sid)).usage.used).toBe(12);
    const paid = await waitFor(async () => (await ledger(fast)).find((e) => e.task_id === tid), "the held replica's reward");
    expect(paid).toMatchObject({ kind: "reward", amount: 12 });
    expect(paid.reason).toMatch(/committed before/);
    expect(await ledger(slow)).toEqual([]);
    expect((await node(slow)).reputation).toMatchObject({ timeouts: 0, slashes: 0 });
    expect((await node(fast)).reputation).toMatchObject({ agreement_rate: null, timeouts: 0 }); // paid, not credited with agreement
    expect(cancelSent(fast, sid, tid) + cancelSent(slow, sid, tid)).toBe(2);
  });

  it("during a similarity round: the round is dropped, a late verdict changes nothing, the least proved usage is charged", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const ms: TestMiner[] = [];
    for (let i = 0; i < 3; i++) ms.push(await miners.start({ models: [model, emb], behaviour: "manual" }));
    const sid = await createSession({
      model,
      redundancy: 2,
      max_miners: 3,
      embedding_model: emb,
      consensus: "similarity",
      task_timeout: 60,
    });
    for (const m of ms) await m.join(sid);
    const pending = complete(sid, { prompt: "sample", temperature: 0.8, max_tokens: 16 });
    const assigned = await waitFor(() => {
      const got = ms.filter((m) => m.assignsFor(sid).length > 0);
      return got.length === 2 ? got : null;
    }, "two replicas assigned");
    const validator = ms.find((m) => !assigned.includes(m))!;
    const tid = assigned[0].assignsFor(sid)[0].task_id;
    const usages = [
      { prompt_tokens: 4, completion_tokens: 6 },
      { prompt_tokens: 4, completion_tokens: 3 },
    ];
    for (const [i, m] of assigned.entries()) {
      m.ack(sid, tid);
      await m.precommit(sid, tid, `sampled answer ${i}`);
      m.commit(sid, tid, `sampled answer ${i}`, { usage: usages[i] });
    }
    const embed = await waitFor(() => validator.messages(sid, tid).find((x) => x.type === "embed"), "the validator asked to embed");
    expect((await memory(sid, tid)).round).toBe(true);

    expect((await cancel(sid, tid)).status).toBe(200);
    expect((await errorOf(await pending)).error.code).toBe("task_cancelled");
    expect(await memory(sid, tid)).toMatchObject({ open: false, round: false });

    // The verdict arrives after the cancel: refused, and the task stays cancelled.
    if (embed.type !== "embed") throw new Error("not an embed");
    validator.send(sid, { type: "embeddings", task_id: tid, model: emb, vectors: embed.texts.map(() => [1, 0, 0]) });
    await waitFor(() => refusedAsUnknown(validator, sid, tid) === 1, "the late verdict refused");
    const after = await getTask(sid, tid);
    expect(after.status).toBe("failed");
    expect(after.error?.code).toBe("task_cancelled");
    expect(after.consensus).toBeNull();
    // Both replicas proved their work; charged the least of it (4 + 3), split between them.
    expect((await getSession(sid)).usage.used).toBe(7);
    for (const m of assigned) {
      const paid = await waitFor(async () => (await ledger(m)).find((e) => e.task_id === tid), "a replica's reward");
      expect(paid).toMatchObject({ kind: "reward", amount: 3 });
    }
    expect(await ledger(validator)).toEqual([]);
  });

  it("is idempotent; a task that finished otherwise is 409 task_finished; bodies, ids and callers are checked", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, task_timeout: 60 });
    await m.join(sid);
    const pending = complete(sid, { prompt: "twice" });
    const a = await m.nextAssign(sid);

    // Only nothing, or an empty object, is a cancel body; nobody without a key, and no unknown id, reaches the task.
    expect((await errorOf(await cancel(sid, a.task_id, { reason: "x" }))).error.code).toBe("invalid_request");
    expect((await errorOf(await cancel(sid, a.task_id, undefined, { raw: "not json" }))).error.code).toBe("invalid_request");
    expect((await cancel(sid, a.task_id, {}, { key: null })).status).toBe(401);
    expect((await cancel(sid, a.task_id, {}, { key: "wrong-key" })).status).toBe(401);
    expect((await errorOf(await cancel(sid, "999999"))).error.code).toBe("task_not_found");
    expect((await errorOf(await cancel(uniq("nobody"), a.task_id))).error.code).toBe("session_not_found");
    expect((await cancel(sid, `0${a.task_id}`)).status).toBe(400);
    expect((await getTask(sid, a.task_id)).status).toBe("assigned"); // none of those touched it

    const first = await cancel(sid, a.task_id);
    const second = await cancel(sid, a.task_id, {});
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(await json(second)).toEqual(await json(first));
    expect((await pending).status).toBe(409);
    await waitFor(() => cancelSent(m, sid, a.task_id) >= 1, "the miner's cancel");
    expect(cancelSent(m, sid, a.task_id)).toBe(1); // told once

    // A closed task cannot be cancelled.
    m.behaviour = "honest";
    const done = await json(await complete(sid, { prompt: "finish me" }));
    const closed = await cancel(sid, done.task_id);
    expect(closed.status).toBe(409);
    const err = await errorOf(closed);
    expect(err.error.code).toBe("task_finished");
    expect(err.error.details).toMatchObject({ status: "closed", error: null });
    expect((await getTask(sid, done.task_id)).status).toBe("closed");

    // Nor a task that failed for another reason (its deadline).
    m.behaviour = "never_ack";
    const timedOut = await complete(sid, { prompt: "too slow", timeout: 1 });
    expect((await errorOf(timedOut)).error.code).toBe("timeout");
    const failedId = m.assignsFor(sid).at(-1)!.task_id;
    const late = await errorOf(await cancel(sid, failedId));
    expect(late.error.code).toBe("task_finished");
    expect(late.error.details).toMatchObject({ status: "failed", error: "timeout" });
  });

  it("survives eviction both ways: a restored task can be cancelled, and a cancelled task stays cancelled and charged", async () => {
    const model = uniq("model");
    const fast = await miners.start({ models: [model], behaviour: "manual" });
    const slow = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, redundancy: 2, task_timeout: 60 });
    await fast.join(sid);
    await slow.join(sid);
    // The client stops waiting: an eviction waits for requests in flight to drain (see eviction.test.ts).
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "evicted", max_tokens: 16 }, { signal: ac.signal }).catch(() => null);
    const tid = (await fast.nextAssign(sid)).task_id;
    await slow.nextAssign(sid);
    fast.ack(sid, tid);
    slow.ack(sid, tid);
    await fast.precommit(sid, tid, "held answer");
    fast.commit(sid, tid, "held answer", { usage: { prompt_tokens: 3, completion_tokens: 4 } });
    await waitFor(async () => (await memory(sid, tid)).held.includes(fast.address), "the commit held");
    ac.abort();
    await pending;

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    // Rebuilt from SQLite with its held commit, then cancelled.
    expect((await memory(sid, tid)).held).toEqual([fast.address]);
    const c = await cancel(sid, tid);
    expect(c.status).toBe(200);
    const view = await json<TaskView>(c);
    await waitFor(() => cancelSent(slow, sid, tid) === 1, "the slow replica's cancel");

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    const again = await cancel(sid, tid);
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual(view);
    expect(await memory(sid, tid)).toMatchObject({ open: false, openTasks: 0, round: false });
    expect((await getSession(sid)).usage).toMatchObject({ used: 7, reserved: 0, tasks_open: 0 });
    slow.commit(sid, tid, "slow answer");
    await waitFor(() => refusedAsUnknown(slow, sid, tid) === 1, "the late commit refused after the eviction");
    expect((await getTask(sid, tid)).error?.code).toBe("task_cancelled");
  });
});

describe("what a cancel costs (cancel.ts, pure)", () => {
  const stamp = { session_id: "s", at: 1, block: 1 };
  const replica = (miner: string, extra: Partial<Replica>): Replica => ({
    miner,
    state: "acked",
    assigned_at: 0,
    ack_deadline: 1e12,
    commit_deadline: 1e12,
    acked_at: 0,
    commitment: null,
    hash: null,
    streamed: "",
    ...extra,
  });
  const task = (replicas: Replica[], reservedTokens = 1000) =>
    ({
      id: 7,
      owner: "o",
      reservedTokens,
      promptBytes: 10,
      assign: { params: { max_tokens: 20 } },
      replicas: new Map(replicas.map((r) => [r.miner, r])),
    }) as unknown as OpenTask;
  const held = (prompt_tokens: number, completion_tokens: number) =>
    ({
      state: "precommitted",
      held: { at: 1, hash: "0x", msg: { usage: { prompt_tokens, completion_tokens } } },
    }) as unknown as Partial<Replica>;

  it("charges the fewest proved tokens (prompt and completion capped), never above the reservation, shared by the committed", () => {
    const bill = cancelBill(
      task([
        replica("a", held(50, 5)), // prompt capped at 10 bytes: 15
        replica("b", { state: "committed", usage: { prompt_tokens: 9, completion_tokens: 90 } }), // completion capped at 20: 29
        replica("c", { state: "acked", streamed: "anything" }), // proved nothing: unpaid
      ]),
      "",
      stamp,
    );
    expect(bill.charged).toBe(15);
    expect(bill.paid.map((p) => [p.miner, p.outcome, p.reward])).toEqual([
      ["a", "cancelled", 7],
      ["b", "cancelled", 7],
    ]);
    expect(cancelBill(task([replica("a", held(9, 20))], 12), "", stamp).charged).toBe(12);
  });

  it("with nothing committed: nothing, or at least the streamed text, paid to the live replicas that streamed it", () => {
    expect(cancelBill(task([replica("a", {})]), "", stamp)).toMatchObject({ charged: 0, paid: [] });
    const sent = "é".repeat(100); // 200 bytes → ⌈200 / 64⌉ = 4 tokens
    const bill = cancelBill(
      task([
        replica("a", { streamed: `${sent} and more` }),
        replica("b", { streamed: "something else" }),
        replica("c", { state: "disconnected", streamed: sent }),
      ]),
      sent,
      stamp,
    );
    expect(bill.charged).toBe(4);
    expect(bill.paid.map((p) => [p.miner, p.reward])).toEqual([["a", 4]]);
    // Nobody left to pay: nothing is charged.
    expect(cancelBill(task([replica("c", { state: "disconnected", streamed: sent })]), sent, stamp).charged).toBe(0);
  });

  it("a repeat is answered with the view, a task that ended otherwise with task_finished, a 404 as it is", () => {
    const view = (status: string, code: string | null) =>
      ({ ok: true, task: { task_id: "7", session_id: "s", status, error: code ? { code, message: "" } : null } }) as never;
    expect(cancelAnswer(view("failed", "task_cancelled"))).toMatchObject({ ok: true });
    expect(cancelAnswer(view("closed", null))).toMatchObject({
      ok: false,
      error: { code: "task_finished", details: { status: "closed" } },
    });
    expect(cancelAnswer(view("failed", "timeout"))).toMatchObject({
      ok: false,
      error: { code: "task_finished", details: { error: "timeout" } },
    });
    const missing = { ok: false as const, error: { code: "task_not_found" as const, message: "unknown task s/7" } };
    expect(cancelAnswer(missing)).toBe(missing);
  });
});
