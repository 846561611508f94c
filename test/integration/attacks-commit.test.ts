import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commitmentHash, precommitTypedData, resultHash, signingDomain } from "../../shared/signing.ts";
import { api, type Router, startRouter, until } from "../helpers/network.ts";
import { openRaw, type RawRegistration, type RawSocket, registerRaw } from "../helpers/raw-miner.ts";

// Issue 12, findings 1, 3 and 4 (the commit path), tried as an attacker would: the real router (wrangler dev) and
// fake miners driven by hand over raw WebSockets, each a registered wallet, sending what no honest agent sends.
//
//   1  a copier acks, reads every route the session owner's API key reaches until another replica's text (or
//      hash) shows, precommits it and commits it. Before: the honest commit was readable in the task view at
//      once and the precommit was the bare keccak of the text, so the copy agreed and was rewarded.
//   3  a miner answers max_tokens 1 with 200 KB and reports prompt_tokens 2^53 − 1. Before: the client got the
//      200 KB, the session's usage became 9e15 (the next request 402) and the ledger showed a 9e15 reward.
//   4  60 token frames of 900 KiB while nobody streams, and a 3 MiB commit. Before: every frame was accepted
//      and its text kept in memory (workerd grew by ~64 MB), and the commit accepted.

const NO_LIMITS = { RATE_LIMIT_IP: 100_000, RATE_LIMIT_MINER: 100_000, RATE_LIMIT_AUTH_FAILURES: 100_000, RATE_LIMIT_KEY: 100_000 };
const rand = () => randomBytes(4).toString("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let router: Router;
const sockets: RawSocket[] = [];
const pending: Promise<unknown>[] = [];

beforeAll(async () => {
  router = await startRouter({ rateLimits: NO_LIMITS });
});

afterAll(async () => {
  for (const s of sockets) s.close();
  await Promise.allSettled(pending);
  await router?.stop();
});

interface Raw {
  reg: RawRegistration;
  ch: RawSocket;
}

async function session(body: Record<string, unknown>): Promise<string> {
  const res = await api(router, "/api/v1/sessions", { body: { deposit: 1_000_000, ...body } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id as string;
}

/** A registered wallet on the pool channel and on session `sid`'s channel (the pool assigns it by model). */
async function rawMiner(model: string, sid: string): Promise<Raw> {
  const reg = await registerRaw(router.url, { models: [model], capacity: 4 });
  const pool = await openRaw(router.url, "/api/v1/miners/connect", reg.token);
  sockets.push(pool);
  await pool.next((m) => m.type === "sessions" && m.sessions.some((s: { session_id: string }) => s.session_id === sid));
  const ch = await openRaw(router.url, `/api/v1/sessions/${sid}/connect`, reg.token);
  sockets.push(ch);
  expect(ch.status).toBe(101);
  await ch.next((m) => m.type === "welcome");
  return { reg, ch };
}

/** This miner's signed precommit of `text`: its commitment (session, task, miner, result hash). */
async function precommitOf(m: RawRegistration, sid: string, tid: string, text: string) {
  const hash = commitmentHash({ session: sid, task: tid, miner: m.account.address, result: resultHash(text) });
  const fields = { session: sid, task: tid, miner: m.account.address, hash };
  const signature = await m.account.signTypedData(precommitTypedData(fields, signingDomain(m.router)));
  return { type: "precommit", task_id: tid, hash, signature };
}

function commitOf(tid: string, text: string, usage = { prompt_tokens: 3, completion_tokens: 4 }) {
  return { type: "commit", task_id: tid, text, finish_reason: "length", usage, inference_ms: 5 };
}

/** Submits a completion without waiting for it; the test reads its task through the miners' assigns. */
function submit(sid: string, body: Record<string, unknown>): Promise<{ status: number; body: any }> {
  const p = api(router, `/api/v1/completions/${sid}`, { body: { max_tokens: 8, timeout: 8, ...body } });
  pending.push(p);
  return p;
}

/** Acks the miner's next assign it has not acked yet; its task id. */
const ackAssign = async (m: Raw): Promise<string> => {
  const acked = new Set(m.ch.messages.filter((x) => x.acked).map((x) => x.task_id));
  const a = await m.ch.next((x) => x.type === "assign" && !acked.has(x.task_id));
  a.acked = true;
  m.ch.send({ type: "ack", task_id: a.task_id });
  return a.task_id as string;
};

/**
 * What a copier holding the session owner's API key can read of task `tid` within `ms`: every route that shows
 * a task (the task, the session's task list) and the result objects they name, polled, until some other miner's
 * text or hash (precommitted or revealed) shows.
 */
async function watch(sid: string, tid: string, self: string, ms: number): Promise<{ text?: string; hash?: string; polls: number }> {
  const deadline = Date.now() + ms;
  let polls = 0;
  for (;;) {
    polls++;
    const one = (await api(router, `/api/v1/tasks/${sid}/${tid}`)).body;
    const list = (await api(router, `/api/v1/tasks/${sid}`)).body.tasks ?? [];
    for (const view of [one, ...list.filter((t: { task_id: string }) => t.task_id === tid)]) {
      const i = (view.results?.miners ?? []).findIndex((m: string) => m !== self);
      if (i >= 0) return { text: view.results.data[i], polls };
      if (view.result?.text !== undefined && view.result.miner !== self) return { text: view.result.text, polls };
      const other = (view.replicas ?? []).find((r: any) => r.miner !== self && (r.hash || r.commitment || r.result_urn));
      if (other) return { hash: other.commitment ?? other.hash ?? other.result_urn, polls };
    }
    if (Date.now() > deadline) return { polls };
    await sleep(50);
  }
}

/** The task once it is finished (closed or failed). */
const finished = (sid: string, tid: string) =>
  until(
    async () => {
      const t = (await api(router, `/api/v1/tasks/${sid}/${tid}`)).body;
      return (t.status === "closed" || t.status === "failed") && t;
    },
    30_000,
    100,
  );

/** A miner's ledger entries for one task, once the pool has them (outcomes travel in batches). */
async function ledgerFor(address: string, tid: string) {
  await sleep(1_500);
  const res = await api(router, `/api/v1/miners/${address}/ledger?limit=100`);
  return (res.body.entries ?? []).filter((e: { task_id: string | null }) => e.task_id === tid);
}

describe("finding 1: copying another replica's output (commit-reveal barrier)", () => {
  it("a copier with the owner's key never sees the honest replica's text or hash before it precommits, and earns nothing", async () => {
    const model = `m-${rand()}`;
    const sid = await session({ model, redundancy: 2, max_miners: 2 });
    const [honest, copier] = [await rawMiner(model, sid), await rawMiner(model, sid)];
    submit(sid, { prompt: "copy me if you can" });
    const [tid] = await Promise.all([ackAssign(honest), ackAssign(copier)]);
    const text = "the honest answer, computed at some cost";
    honest.ch.send(await precommitOf(honest.reg, sid, tid, text));
    honest.ch.send(commitOf(tid, text));

    // The copier waits, reading every route it can, then precommits and commits whatever it found.
    const seen = await watch(sid, tid, copier.reg.address, 2_000);
    const answer = seen.text ?? "a guess, with nothing to copy";
    copier.ch.send(await precommitOf(copier.reg, sid, tid, answer));
    copier.ch.send(commitOf(tid, answer));

    const task = await finished(sid, tid);
    const entries = await ledgerFor(copier.reg.address, tid);
    const rewards = entries
      .filter((e: { kind: string }) => e.kind === "reward")
      .reduce((s: number, e: { amount: number }) => s + e.amount, 0);
    expect(rewards, `copier rewarded after reading ${seen.text ? "the text" : "nothing"}`).toBe(0);
    expect(task.consensus?.agreed ?? []).not.toContain(copier.reg.address);
    expect(seen.text, "a route showed the honest text").toBeUndefined();
    expect(seen.hash, "a route showed the honest commitment").toBeUndefined();
    expect(seen.polls).toBeGreaterThan(5);
  });

  it("a replacement joins the barrier: text revealed before it precommitted never reaches it", async () => {
    const model = `m-${rand()}`;
    const sid = await session({ model, redundancy: 2, max_miners: 3 });
    const [honest, quitter] = [await rawMiner(model, sid), await rawMiner(model, sid)];
    submit(sid, { prompt: "a replacement may copy" });
    const [tid] = await Promise.all([ackAssign(honest), ackAssign(quitter)]);
    const text = "revealed before the replacement came";
    honest.ch.send(await precommitOf(honest.reg, sid, tid, text));
    honest.ch.send(commitOf(tid, text));
    await sleep(300);
    // The copier joins now; the quitter hands the task back, so the copier becomes the replacement.
    const copier = await rawMiner(model, sid);
    quitter.ch.send({ type: "release", task_id: tid, reason: "leaving" });
    expect(await ackAssign(copier)).toBe(tid);
    const seen = await watch(sid, tid, copier.reg.address, 2_000);
    const answer = seen.text ?? "a replacement's guess";
    copier.ch.send(await precommitOf(copier.reg, sid, tid, answer));
    copier.ch.send(commitOf(tid, answer));

    const task = await finished(sid, tid);
    const rewards = (await ledgerFor(copier.reg.address, tid)).filter((e: { kind: string }) => e.kind === "reward");
    expect(rewards).toEqual([]);
    expect(task.consensus?.agreed ?? []).not.toContain(copier.reg.address);
    expect(seen.text).toBeUndefined();
    expect(seen.hash).toBeUndefined();
  });
});

describe("finding 3: a miner's usage and text are checked, not trusted", () => {
  it("200 KB for max_tokens 1 and prompt_tokens 2^53 − 1: rejected and slashed; the session is not charged; the next request runs", async () => {
    const model = `m-${rand()}`;
    const sid = await session({ model, redundancy: 1, max_miners: 1 });
    const liar = await rawMiner(model, sid);
    const res = submit(sid, { prompt: "one token, please", max_tokens: 1, timeout: 4 });
    const tid = await ackAssign(liar);
    const big = "x".repeat(200_000);
    liar.ch.send(await precommitOf(liar.reg, sid, tid, big));
    liar.ch.send(commitOf(tid, big, { prompt_tokens: 2 ** 53 - 1, completion_tokens: 1 }));
    const answer = await res;
    expect(answer.body.choices?.[0]?.text?.length ?? 0, "the client got the oversize text").toBeLessThanOrEqual(64);
    const s = (await api(router, `/api/v1/sessions/${sid}`)).body;
    expect(s.usage.used).toBeLessThanOrEqual(17 + 1); // at most this task's reservation (17 prompt bytes + max_tokens 1)
    const entries = await ledgerFor(liar.reg.address, tid);
    expect(entries.filter((e: { kind: string }) => e.kind === "reward")).toEqual([]);
    expect(entries.find((e: { kind: string }) => e.kind === "slash")?.reason).toMatch(/exceeds/);

    // The session still has its deposit: the next task runs (before, 402 deposit_exhausted).
    const next = submit(sid, { prompt: "and now honestly", max_tokens: 1 });
    const t2 = await ackAssign(liar);
    liar.ch.send(await precommitOf(liar.reg, sid, t2, "ok"));
    liar.ch.send(commitOf(t2, "ok", { prompt_tokens: 4, completion_tokens: 1 }));
    const ok = await next;
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.usage).toEqual({ prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 });
  });

  it("agreeing replicas that report different prompt tokens: the fewest is charged, within the prompt's bytes; the other is named", async () => {
    const model = `m-${rand()}`;
    const sid = await session({ model, redundancy: 2, max_miners: 2 });
    const [greedy, modest] = [await rawMiner(model, sid), await rawMiner(model, sid)];
    const prompt = "twenty bytes, really"; // 20 bytes
    const res = submit(sid, { prompt, max_tokens: 4 });
    const [tid] = await Promise.all([ackAssign(greedy), ackAssign(modest)]);
    const text = "same";
    // Both claim more prompt tokens than the prompt has bytes (within the chat-template allowance, so neither is
    // refused); before the fix the task charged whichever report it chose.
    greedy.ch.send(await precommitOf(greedy.reg, sid, tid, text));
    modest.ch.send(await precommitOf(modest.reg, sid, tid, text));
    greedy.ch.send(commitOf(tid, text, { prompt_tokens: 3_000, completion_tokens: 4 }));
    modest.ch.send(commitOf(tid, text, { prompt_tokens: 2_000, completion_tokens: 4 }));
    const answer = await res;
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(answer.body.usage).toEqual({ prompt_tokens: 20, completion_tokens: 4, total_tokens: 24 });
    const task = await finished(sid, tid);
    expect(task.consensus.usage_disputed).toEqual([greedy.reg.address]);
    const rewards = (await ledgerFor(greedy.reg.address, tid)).filter((e: { kind: string }) => e.kind === "reward");
    expect(rewards.map((e: { amount: number }) => e.amount)).toEqual([24 / 2]);
  });
});

describe("finding 4: bounded frames, and streamed text not kept when nobody streams", () => {
  it("60 token frames of 900 KiB while nobody streams are refused and kept nowhere; a 3 MiB commit changes nothing", async () => {
    const model = `m-${rand()}`;
    const sid = await session({ model, redundancy: 1, max_miners: 1 });
    const m = await rawMiner(model, sid);
    const res = submit(sid, { prompt: "nobody streams this", max_tokens: 8, timeout: 20 });
    const tid = await ackAssign(m);
    const refusals = () => m.ch.messages.filter((x) => x.type === "error" && x.code === "invalid_message").length;
    const frame = "y".repeat(900 * 1024);
    for (let seq = 0; seq < 60; seq++) m.ch.send({ type: "token", task_id: tid, seq, text: frame });
    await until(async () => refusals() >= 60, 20_000, 100).catch(() => null);
    // Each frame is past what any task may stream (MAX_RESULT_TEXT): refused, kept nowhere. Frames within it
    // are dropped unread when nobody streams (test/unit/commit-path.test.ts looks inside the queue).
    expect(refusals()).toBe(60);

    // A 3 MiB commit is refused unread: nothing about the replica changes, and it may still deliver what it
    // committed to.
    m.ch.send(await precommitOf(m.reg, sid, tid, "short"));
    m.ch.send(commitOf(tid, "z".repeat(3 * 1024 * 1024)));
    await until(async () => refusals() >= 61, 10_000, 100);
    const mid = (await api(router, `/api/v1/tasks/${sid}/${tid}`)).body;
    expect(mid.status).not.toBe("closed");
    expect(mid.replicas[0].state).toBe("precommitted");
    m.ch.send(commitOf(tid, "short"));
    const answer = await res;
    expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(200);
    expect(answer.body.choices[0].text).toBe("short");
  });
});
