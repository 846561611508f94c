import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import type { OpenTask, Replica } from "../../durable-objects/session-queue/task.ts";
import { judgeAnswer, spotDetection, spotPositions } from "../../durable-objects/session-queue/verify-judge.ts";
import { commitFault } from "../../durable-objects/session-queue/verify-round.ts";
import type { SessionMinerMessage, VerifyFailure, VerifyMessage } from "../../shared/protocol.ts";
import { resultHash } from "../../shared/signing.ts";
import {
  api,
  complete,
  createSession,
  getTask,
  json,
  type MinerOptions,
  MinerSet,
  readSSE,
  sessionStub,
  type TestMiner,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

// Verified sampling in the SessionQueue (durable-objects/session-queue/verify-round.ts) with protocol-correct test
// miners. Their "model" is the character code: a commit's token ids are its text's code points, and a test
// validator decodes them back, so the router's own checks (decoded text hash, prompt tokens, token count) are real;
// which positions a validator fails is up to each test.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

type Verification = Extract<SessionMinerMessage, { type: "verification" }>;

/** A validator that decodes the ids as code points and fails the positions `bad` names (within those asked). */
function validator(bad: (text: string, msg: VerifyMessage) => number[] = () => [], opts: { checkFewer?: boolean } = {}) {
  return (msg: VerifyMessage): SessionMinerMessage => {
    const ids = msg.token_ids ?? [];
    const text = String.fromCodePoint(...ids);
    const asked = msg.positions ?? ids.map((_, i) => i);
    const failures: VerifyFailure[] = bad(text, msg)
      .filter((p) => asked.includes(p))
      .map((pos) => ({ pos, token: ids[pos], expected: 32, margin: -0.5 }));
    return {
      type: "verification",
      task_id: msg.task_id,
      text_hash: resultHash(text),
      prompt_tokens: msg.input.prompt.length,
      checked: opts.checkFewer ? 0 : asked.length,
      failed: failures.length,
      failures,
      near_ties: 0,
      min_margin: 0.01,
    };
  };
}

/** Positions of a junk text's characters: every index where the text has a 'z' (the test's "wrong token"). */
const zs = (text: string) => [...text].flatMap((c, i) => (c === "z" ? [i] : []));

const verifiesSent = (ms: TestMiner[], sid: string) =>
  ms.flatMap((m) => m.messages(sid).flatMap((x) => (x.type === "verify" ? [{ to: m.address, msg: x }] : [])));

async function verifySession(model: string, extra: Record<string, unknown> = {}): Promise<string> {
  return createSession({ model, redundancy: 1, max_miners: 4, consensus: "verify", ...extra });
}

/**
 * A verify session where the cheater gets the task first: it alone is connected when the task is submitted, and it
 * holds its result until two honest miners (who validate with `verify`) have joined.
 */
async function cheaterFirst(cheat: Partial<MinerOptions>, honestText: string, verify: (m: VerifyMessage) => SessionMinerMessage) {
  const model = uniq("model");
  const cheater = await miners.start({ models: [model], behaviour: "hold", verify, ...cheat });
  const honest = [
    await miners.start({ models: [model], text: () => honestText, verify }),
    await miners.start({ models: [model], text: () => honestText, verify }),
  ];
  const sid = await verifySession(model);
  await cheater.join(sid);
  const pending = complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 });
  const a = await cheater.nextAssign(sid);
  for (const m of honest) await m.join(sid);
  await waitFor(() => cheater.held.has(`${sid}/${a.task_id}`), "the cheater's result");
  await cheater.finish(sid, a.task_id);
  const res = await pending;
  expect(res.status).toBe(200);
  const body = await json(res);
  return { body, task: await getTask(sid, body.task_id), cheater, honest, sid };
}

describe("verified sampling: the router's side", () => {
  it("k = 1: a miner outside the task re-scores the output; the verdict carries the evidence", async () => {
    const model = uniq("model");
    const ms = [await miners.start({ models: [model], text: () => "a fine answer", verify: validator() })];
    ms.push(await miners.start({ models: [model], text: () => "a fine answer", verify: validator() }));
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);

    const res = await complete(sid, { prompt: "say", temperature: 0.8, max_tokens: 64 });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("a fine answer");
    expect(body.consensus).toMatchObject({ method: "verify", status: "agreed", outliers: [] });
    const v = body.consensus.verification;
    expect(v).toMatchObject({ fraction: 1, checked: 13, tokens: 13, detection: 1, failed: {} });
    const task = await getTask(sid, body.task_id);
    expect(v.validators).toHaveLength(1);
    expect(task.assigned_miners).not.toContain(v.validators[0]);
    // The replica committed its token ids and was sent nothing to verify; the validator got the task's seed and ids.
    const sent = verifiesSent(ms, sid);
    expect(sent).toHaveLength(1);
    expect(sent[0].to).toBe(v.validators[0]);
    expect(String.fromCodePoint(...sent[0].msg.token_ids!)).toBe("a fine answer");
    expect(sent[0].msg.params.seed).toBe(Number(body.task_id));
    expect(sent[0].msg.positions).toBeUndefined();
  });

  it("a replica validators fail is an outlier with its positions as evidence, and the task moves to another miner", async () => {
    const { body, task, cheater, honest, sid } = await cheaterFirst({ text: () => "zap zing zoo" }, "an honest one", validator(zs));
    expect(task.assigned_miners[0]).toBe(cheater.address);
    expect(body.choices[0].text).toBe("an honest one");
    expect(body.consensus.method).toBe("verify");
    expect(body.consensus.outliers).toEqual([cheater.address]);
    expect(body.consensus.agreed).not.toContain(cheater.address);
    const failed = body.consensus.verification.failed[cheater.address];
    expect(failed.positions).toEqual([0, 4, 9]);
    expect(failed.count).toBe(3);
    // A lone accusation was confirmed by a second validator before the replica was failed.
    expect(verifiesSent(honest, sid).filter((s) => s.msg.token_ids?.length === 12)).toHaveLength(2);
    const row = task.replicas.find((r) => r.miner === cheater.address)!;
    expect(row.reason).toMatch(/^verification failed: 3 of 12 checked tokens differ .*positions 0 \(122, expected 32\)/);
    // The ledger: an outlier (penalised, not slashed), its reason naming the positions.
    await waitFor(async () => {
      const { nodes } = await json<{ nodes: { address: string; reputation: { outliers: number } }[] }>(await api("GET", "/miners"));
      return nodes.find((x) => x.address === cheater.address)?.reputation.outliers === 1;
    }, "the cheater's outlier outcome");
  });

  it("one lying validator cannot fail an honest replica when another validator can be asked", async () => {
    const model = uniq("model");
    const liar = validator((text) => [0, text.length - 1]);
    const ms = [
      await miners.start({ models: [model], text: () => "honest text", verify: validator() }),
      await miners.start({ models: [model], text: () => "honest text", verify: liar }),
      await miners.start({ models: [model], text: () => "honest text", verify: validator() }),
    ];
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);
    const body = await json(await complete(sid, { prompt: "x", temperature: 0.8, max_tokens: 64 }));
    expect(body.consensus.method).toBe("verify");
    expect(body.consensus.outliers).toEqual([]);
    expect(body.consensus.verification.failed).toEqual({});
    const task = await getTask(sid, body.task_id);
    expect(task.assigned_miners).toHaveLength(1);
  });

  it("spot check: a random share of positions, drawn by the router after the commit, with the stated detection", async () => {
    const model = uniq("model");
    const text = "0123456789abcdefghijklmnopqrstuvwxyz0123"; // 40 tokens
    const ms = [
      await miners.start({ models: [model], text: () => text, verify: validator() }),
      await miners.start({ models: [model], text: () => text, verify: validator() }),
    ];
    const sid = await createSession({ model, redundancy: 1, max_miners: 4 }); // auto: verified on request
    for (const m of ms) await m.join(sid);
    const body = await json(await complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64, verify: { fraction: 0.25 } }));
    expect(body.consensus.verification).toMatchObject({ fraction: 0.25, checked: 10, tokens: 40, detection: 0.25 });
    const [sent] = verifiesSent(ms, sid);
    const pos = sent.msg.positions!;
    expect(pos).toHaveLength(10);
    expect(new Set(pos).size).toBe(10);
    expect(pos.every((p, i) => p >= 0 && p < 40 && (i === 0 || p > pos[i - 1]))).toBe(true);
    // The assign told the replica the task is verified, not where.
    const assign = ms.flatMap((m) => m.assignsFor(sid))[0];
    expect(assign.params.verify).toEqual({ fraction: 0.25 });
    expect(JSON.stringify(assign)).not.toContain('"positions"');
    // Unverified tasks of the session ask nobody.
    const plain = await json(await complete(sid, { prompt: "q", temperature: 0.8, max_tokens: 64 }));
    expect(plain.consensus.method).toBe("single");
    expect(verifiesSent(ms, sid)).toHaveLength(1);
  });

  it("a commit without token ids, or with fewer than the completion tokens it claims, is rejected", async () => {
    const model = uniq("model");
    const noIds = await miners.start({ models: [model], text: () => "abc", tokenIds: () => [], verify: validator() });
    const sid = await verifySession(model);
    await noIds.join(sid);
    const res = await complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64, timeout: 6 });
    expect(res.status).toBe(504);
    const [a] = noIds.assignsFor(sid);
    const task = await getTask(sid, a.task_id);
    expect(task.replicas[0].state).toBe("rejected");
    expect(task.replicas[0].reason).toBe("usage claims 3 completion tokens; the commit carries 0 token ids");
  });

  it("the router's own checks: text that is not what the ids decode to fails verification", async () => {
    // Commits "bbb" with the ids of "aaa": a validator decodes "aaa", whose hash is not the revealed one.
    const { body, cheater } = await cheaterFirst({ text: () => "bbb", tokenIds: () => [97, 97, 97] }, "ok!", validator());
    expect(body.choices[0].text).toBe("ok!");
    expect(body.consensus.verification.failed[cheater.address]).toMatchObject({
      positions: [-1],
      reason: "its text is not what its token ids decode to",
    });
  });

  it("the router's own checks: prompt usage other than the prompt's token count fails verification", async () => {
    const usage = () => ({ prompt_tokens: 9, completion_tokens: 3 });
    const { body, cheater } = await cheaterFirst({ text: () => "ok!", usage }, "ok!", validator());
    expect(body.choices[0].text).toBe("ok!");
    expect(body.consensus.agreed).not.toContain(cheater.address);
    expect(body.consensus.verification.failed[cheater.address]).toMatchObject({
      positions: [-1],
      reason: "usage claims 9 prompt tokens; the prompt is 1",
    });
  });

  it("answers from miners that were not asked are refused; an answer checking fewer positions is not counted", async () => {
    const model = uniq("model");
    const lazy = validator(() => [], { checkFewer: true });
    const ms = [
      await miners.start({ models: [model], text: () => "hello", verify: validator() }),
      await miners.start({ models: [model], text: () => "hello", verify: lazy }),
      await miners.start({ models: [model], text: () => "hello", verify: validator() }),
    ];
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);
    // An unasked verdict for a task that does not exist.
    ms[2].send(sid, {
      type: "verification",
      task_id: "999",
      text_hash: resultHash("x"),
      prompt_tokens: 1,
      checked: 1,
      failed: 1,
      failures: [{ pos: 0, token: 1, expected: 2, margin: -1 }],
      near_ties: 0,
      min_margin: null,
    } satisfies Verification);
    await waitFor(() => ms[2].messages(sid).some((m) => m.type === "error" && m.code === "unknown_task"), "the refusal");
    const body = await json(await complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 }));
    expect(body.consensus.method).toBe("verify");
    // The lazy validator (checked 0 of 5) is not among those whose verdict counted.
    expect(body.consensus.verification.validators).not.toContain(ms[1].address);
    expect(body.consensus.verification.checked).toBe(5);
  });

  it("streaming: the replica's tokens stream as produced; the stream ends once the verdict is in", async () => {
    const model = uniq("model");
    const text = "streamed and then verified";
    let verdicts = 0;
    const slowValidator = (msg: VerifyMessage) => {
      verdicts++;
      return validator()(msg);
    };
    const ms = [
      await miners.start({ models: [model], text: () => text, verify: slowValidator }),
      await miners.start({ models: [model], text: () => text, verify: slowValidator }),
    ];
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "s", temperature: 0.8, max_tokens: 64, stream: true });
    const data = await readSSE(res);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(text);
    expect(chunks.length).toBeGreaterThan(2); // token by token, not one lump at the end
    expect(verdicts).toBe(1);
    const task = await getTask(sid, chunks[0].task_id);
    expect(task.consensus).toMatchObject({ method: "verify", status: "agreed" });
    expect(task.consensus?.verification?.checked).toBe(text.length);
  });

  it("a validator past its answer time is still waited for when nobody else can verify: its late answer counts", async () => {
    const model = uniq("model");
    const silent = () => null; // answers only when the test sends it, after VERIFY_TIMEOUT_MS (3 s in the unit pool)
    const ms = [
      await miners.start({ models: [model], text: () => "late but sound", verify: silent }),
      await miners.start({ models: [model], text: () => "late but sound", verify: silent }),
    ];
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);
    const started = Date.now();
    const pending = complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 });
    await waitFor(() => verifiesSent(ms, sid).length === 1, "the verify request");
    const [{ to, msg }] = verifiesSent(ms, sid);
    await new Promise((r) => setTimeout(r, 3_500));
    ms.find((m) => m.address === to)!.send(sid, validator()(msg));
    const body = await json(await pending);
    expect(Date.now() - started).toBeGreaterThanOrEqual(3_500);
    expect(body.choices[0].text).toBe("late but sound");
    expect(body.consensus).toMatchObject({ method: "verify", status: "agreed" });
    expect(body.consensus.note).toBeUndefined();
    expect(body.consensus.verification).toMatchObject({ validators: [to], failed: {} });
  });

  it("fails closed: when no validator answers by the task's deadline, the unchecked output is not returned", async () => {
    const model = uniq("model");
    const ms = [
      await miners.start({ models: [model], text: () => "never checked", verify: () => null }),
      await miners.start({ models: [model], text: () => "never checked", verify: () => null }),
    ];
    const sid = await verifySession(model);
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64, timeout: 4 });
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(504);
    expect(body.error.code).toBe("timeout");
    expect(body.error.message).toMatch(/no validator answered .* not verified/);
    expect(JSON.stringify(body)).not.toContain("never checked");
    expect(verifiesSent(ms, sid)).toHaveLength(1);
  });

  it("falls back, and says so, when no validator outside the task exists", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model], text: () => "alone", verify: validator() });
    const sid = await verifySession(model);
    await m.join(sid);
    const body = await json(await complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 }));
    expect(body.choices[0].text).toBe("alone");
    expect(body.consensus.method).toBe("single");
    expect(body.consensus.note).toBe(`no validator outside the task serves ${model}; not verified`);
    expect(m.messages(sid).some((x) => x.type === "verify")).toBe(false);
  });
});

const ledgerOf = async (address: string) => (await json<{ entries: LedgerEntry[] }>(await api("GET", `/miners/${address}/ledger`))).entries;

describe("verified sampling: evictions and disputed accusations", () => {
  it("a verification in flight at an eviction: the token ids are on record, so the restored queue verifies the task", async () => {
    const model = uniq("model");
    let asked = 0;
    // Silent the first time (the round the eviction cuts), then an honest validator.
    const once = (msg: VerifyMessage) => (asked++ === 0 ? null : validator()(msg));
    const ms = [
      await miners.start({ models: [model], text: () => "kept", verify: once }),
      await miners.start({ models: [model], text: () => "kept", verify: once }),
    ];
    const sid = await verifySession(model, { task_timeout: 60 });
    for (const m of ms) await m.join(sid);
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 }, { signal: ac.signal }).catch(() => null);
    await waitFor(() => verifiesSent(ms, sid).length >= 1, "the verify request");
    const tid = verifiesSent(ms, sid)[0].msg.task_id;
    ac.abort();
    await pending;
    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    const task = await waitForStatus(sid, tid, "closed", 20_000);
    expect(task.consensus?.method).toBe("verify");
    expect(task.consensus?.note).toBeUndefined();
    expect(task.consensus?.verification).toMatchObject({ checked: 4, tokens: 4, failed: {} });
    expect(task.result?.text).toBe("kept");
    // The restored round sent the same ids again.
    const sent = verifiesSent(ms, sid);
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(String.fromCodePoint(...sent.at(-1)!.msg.token_ids!)).toBe("kept");
  });

  it("a failed replica's evidence survives an eviction: the final verdict still names it", async () => {
    const model = uniq("model");
    const cheater = await miners.start({ models: [model], behaviour: "hold", text: () => "zzz", verify: validator(zs) });
    const sid = await verifySession(model, { task_timeout: 60 });
    await cheater.join(sid);
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 }, { signal: ac.signal }).catch(() => null);
    const a = await cheater.nextAssign(sid);
    // Two validators that fail the z's; the replacement (one of them) holds its result across the eviction.
    const vs = [
      await miners.start({ models: [model], behaviour: "hold", text: () => "fine", verify: validator(zs) }),
      await miners.start({ models: [model], behaviour: "hold", text: () => "fine", verify: validator(zs) }),
    ];
    for (const m of vs) await m.join(sid);
    await waitFor(() => cheater.held.has(`${sid}/${a.task_id}`), "the cheater's result");
    await cheater.finish(sid, a.task_id);
    const next = await waitFor(() => vs.find((m) => m.held.has(`${sid}/${a.task_id}`)), "the replacement's result");
    ac.abort();
    await pending;
    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    await next.finish(sid, a.task_id);
    const task = await waitForStatus(sid, a.task_id, "closed", 20_000);
    expect(task.result?.text).toBe("fine");
    expect(task.consensus?.method).toBe("verify");
    expect(task.consensus?.outliers).toContain(cheater.address);
    expect(task.consensus?.verification?.failed[cheater.address]).toMatchObject({ positions: [0, 1, 2], count: 3 });
    expect(task.replicas.find((r) => r.miner === cheater.address)?.reason).toMatch(/^verification failed: 3 of 3/);
  });

  /** A session where `first` gets the task alone, holds it until `others` joined, then commits. */
  async function firstThen(model: string, first: TestMiner, others: TestMiner[]) {
    const sid = await verifySession(model);
    await first.join(sid);
    const pending = complete(sid, { prompt: "p", temperature: 0.8, max_tokens: 64 });
    const a = await first.nextAssign(sid);
    for (const m of others) await m.join(sid);
    await waitFor(() => first.held.has(`${sid}/${a.task_id}`), "the first result");
    await first.finish(sid, a.task_id);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    return { sid, body, task: await getTask(sid, body.task_id) };
  }

  /**
   * The first replica's honest output is failed by two liars (L1, L2), each busy holding a task of its own, so the
   * retry waits for the replacement R (never shown the output), which joins next and holds its identical output
   * until `fresh` has joined: the only validator outside the task that never saw the failed output.
   */
  async function dispute(freshVerify: (msg: VerifyMessage) => SessionMinerMessage, firstUsage?: MinerOptions["usage"]) {
    const model = uniq("model");
    const liar = validator(() => [0]); // fails every output at position 0
    const honest = () => "the same sample";
    const first = await miners.start({
      models: [model],
      behaviour: "hold",
      text: honest,
      verify: liar,
      ...(firstUsage ? { usage: firstUsage } : {}),
    });
    const sid = await verifySession(model, { task_timeout: 60, max_miners: 6 });
    await first.join(sid);
    const ac = new AbortController();
    const ask = (prompt: string) => complete(sid, { prompt, temperature: 0.8, max_tokens: 64 }, { signal: ac.signal }).catch(() => null);
    void ask("p");
    const a = await first.nextAssign(sid);
    const liars = [
      await miners.start({ models: [model], behaviour: "hold", text: honest, verify: liar }),
      await miners.start({ models: [model], behaviour: "hold", text: honest, verify: liar }),
    ];
    for (const m of liars) await m.join(sid);
    void ask("busy 1");
    void ask("busy 2");
    for (const m of liars) await m.nextAssign(sid);
    await waitFor(() => first.held.has(`${sid}/${a.task_id}`), "the first result");
    await first.finish(sid, a.task_id);
    await waitFor(async () => (await getTask(sid, a.task_id)).replicas[0].reason?.startsWith("verification failed"), "the failure");
    const replacement = await miners.start({ models: [model], behaviour: "hold", text: honest, verify: liar });
    await replacement.join(sid);
    await waitFor(() => replacement.held.has(`${sid}/${a.task_id}`), "the replacement's result");
    const fresh = await miners.start({ models: [model], text: honest, verify: freshVerify });
    await fresh.join(sid);
    await replacement.finish(sid, a.task_id);
    return { sid, tid: a.task_id, first, liars, replacement, fresh, done: () => ac.abort() };
  }

  it("an honest output falsely failed, reproduced exactly by a miner never shown it and passed by a fresh validator: disputed, nobody punished", async () => {
    const { sid, tid, first, liars, replacement, fresh, done } = await dispute(validator());
    const task = await waitForStatus(sid, tid, "closed", 20_000);
    done();
    expect(task.result?.text).toBe("the same sample");
    const c = task.consensus!;
    expect(c.method).toBe("verify");
    expect(task.result?.miner).toBe(replacement.address);
    const d = c.verification!.disputed![first.address];
    // The two liars failed it; the replacement was neither of them, and never received it to verify.
    expect([...d.by].sort()).toEqual(liars.map((m) => m.address).sort());
    expect(d.reproduced_by).toBe(replacement.address);
    expect(verifiesSent([replacement], sid)).toEqual([]);
    // Settled by the one validator that never saw the failed output.
    expect(c.verification!.validators).toEqual([fresh.address]);
    expect(c.verification!.failed).toEqual({});
    expect(c.outliers).toEqual([]);
    expect(c.agreed).toEqual(expect.arrayContaining([first.address, replacement.address]));
    expect(c.note).toMatch(/reproduced it token for token with the same seed, and validators that never saw it passed it/);
    const row = (m: string) => task.replicas.find((r) => r.miner === m)!;
    expect(row(first.address).reason).toMatch(/^verification disputed: .* failed it \(1 of 15 checked tokens differ/);
    expect(row(replacement.address).reason).toMatch(/^reproduced exactly the output of /);
    // The ledger: both rewarded, the first with the dispute as its reason; no penalty.
    const entry = await waitFor(async () => (await ledgerOf(first.address)).find((e) => e.task_id === tid), "the ledger");
    expect(entry.kind).toBe("reward");
    expect(entry.reason).toMatch(/^in consensus: verification disputed/);
    expect((await ledgerOf(first.address)).some((e) => e.kind === "penalty")).toBe(false);
  });

  it("a failure of the router's own checks (inflated usage) is not disputable, whoever reproduces the tokens", async () => {
    const inflated = () => ({ prompt_tokens: 17, completion_tokens: 15 });
    const { sid, tid, first, replacement, done } = await dispute(validator(), inflated);
    const task = await waitForStatus(sid, tid, "closed", 20_000);
    done();
    expect(task.result?.miner).toBe(replacement.address);
    expect(task.consensus?.verification?.disputed).toBeUndefined();
    expect(task.consensus?.outliers).toEqual([first.address]);
    expect(task.consensus?.verification?.failed[first.address]).toMatchObject({ positions: [0, -1] });
  });

  it("two miners with the same wrong model agree exactly: a fresh validator fails the reproduction too, no dispute", async () => {
    const { sid, tid, first, replacement, done } = await dispute(validator(() => [0]));
    const task = await waitFor(async () => {
      const t = await getTask(sid, tid);
      return t.replicas.find((r) => r.miner === replacement.address)?.reason?.startsWith("verification failed") ? t : null;
    }, "the reproduction's failure");
    done();
    expect(task.replicas.find((r) => r.miner === first.address)?.reason).toMatch(/^verification failed/);
    expect(task.consensus?.verification?.disputed).toBeUndefined();
  });

  it("copying: a replacement that validated the failed output and commits it again makes no dispute", async () => {
    const model = uniq("model");
    // Each validator fails a task the first time it is asked about it, and passes it afterwards.
    const firstTimeLiar = () => {
      const seen = new Set<string>();
      return (msg: VerifyMessage) => {
        const again = seen.has(msg.task_id);
        seen.add(msg.task_id);
        return validator(() => (again ? [] : [0]))(msg);
      };
    };
    const text = () => "copied text";
    const first = await miners.start({ models: [model], behaviour: "hold", text, verify: firstTimeLiar() });
    // Only two others: both are asked about the first output, so the replacement is one that saw it.
    const others = [
      await miners.start({ models: [model], text, verify: firstTimeLiar() }),
      await miners.start({ models: [model], text, verify: firstTimeLiar() }),
    ];
    const { sid, body } = await firstThen(model, first, others);
    const c = body.consensus;
    const second = (await getTask(sid, body.task_id)).result!.miner;
    expect(verifiesSent(others, sid).filter((x) => x.to === second).length).toBeGreaterThanOrEqual(1);
    // Its identical output was verified like any other (by the one miner outside the task), and the accusation stands.
    expect(c.method).toBe("verify");
    expect(c.verification.disputed).toBeUndefined();
    expect(c.verification.failed[first.address]).toMatchObject({ positions: [0] });
    expect(c.outliers).toEqual([first.address]);
    expect(c.verification.validators).toHaveLength(1);
    expect(c.verification.validators).not.toContain(second);
  });
});

describe("verify-judge", () => {
  const replica = { hash: resultHash("abc"), usage: { prompt_tokens: 2, completion_tokens: 3 }, token_ids: [97, 98, 99] } as Replica;
  const answer = (over: Partial<Verification> = {}): Verification => ({
    type: "verification",
    task_id: "1",
    text_hash: resultHash("abc"),
    prompt_tokens: 2,
    checked: 3,
    failed: 0,
    failures: [],
    near_ties: 1,
    min_margin: 0.2,
    ...over,
  });

  it("passes a clean answer and fails each fault with its evidence", () => {
    expect(judgeAnswer(replica, answer())).toMatchObject({ ok: true, count: 0, nearTies: 1 });
    const bad = judgeAnswer(replica, answer({ failed: 1, failures: [{ pos: 2, token: 99, expected: 100, margin: -0.3 }] }))!;
    expect(bad).toMatchObject({ ok: false, positions: [2], count: 1 });
    expect(bad.reason).toBe("1 of 3 checked tokens differ from what the seeded sampler selects: positions 2 (99, expected 100)");
    expect(judgeAnswer(replica, answer({ text_hash: resultHash("abd") }))).toMatchObject({ ok: false, positions: [-1], count: 1 });
    expect(judgeAnswer(replica, answer({ checked: 2 }))).toBeNull();
    expect(judgeAnswer(replica, answer({ checked: 1 }), [0])).toMatchObject({ ok: true });
  });

  it("commit faults: plain ids counted by the router; a private task with allowlisted validators must seal them", () => {
    const commit = (over: Record<string, unknown> = {}) =>
      ({
        type: "commit",
        task_id: "1",
        text: "",
        finish_reason: "stop",
        usage: { prompt_tokens: 1, completion_tokens: 3 },
        inference_ms: 1,
        ...over,
      }) as Parameters<typeof commitFault>[2];
    const task = (payload?: Record<string, unknown>, verifyValidators?: string[]) =>
      ({
        assign: { params: { verify: { fraction: 1 } }, ...(payload ? { payload } : {}) },
        ...(verifyValidators ? { verifyValidators } : {}),
      }) as unknown as OpenTask;
    expect(commitFault(task(), "auto", commit())).toBe("verified task: the commit carries no token ids");
    expect(commitFault(task(), "auto", commit({ token_ids: [1, 2] }))).toMatch(/usage claims 3 completion tokens; the commit carries 2/);
    expect(commitFault(task(), "auto", commit({ token_ids: [1, 2, 3] }))).toBeNull();
    const priv = { encrypted: true, result_policy: "offchain", inline_limit: 0 };
    // No allowlisted validator: nothing to send (the task falls back, unverified).
    expect(commitFault(task(priv), "auto", commit())).toBeNull();
    // Allowlisted validators: sealed ids are required; plain ones are no substitute (they would show the router the text).
    expect(commitFault(task(priv, ["0xabc"]), "auto", commit({ token_ids: [1, 2, 3] }))).toBe(
      "verified private task: the commit carries no sealed token ids",
    );
    expect(commitFault(task(priv, ["0xabc"]), "auto", commit({ token_ids_sealed: "AAAA" }))).toBeNull();
  });

  it("spot positions are distinct, in range and sorted; detection is 1 − C(n−m, s)/C(n, s)", () => {
    for (let t = 0; t < 50; t++) {
      const p = spotPositions(48, 0.1);
      expect(p).toHaveLength(5);
      expect(new Set(p).size).toBe(5);
      expect(p.every((x, i) => x >= 0 && x < 48 && (i === 0 || x > p[i - 1]))).toBe(true);
    }
    expect(spotPositions(3, 0.01)).toHaveLength(1);
    expect(spotDetection(48, 5)).toBe(0.1042);
    expect(spotDetection(48, 5, 10)).toBe(0.7069);
    expect(spotDetection(48, 48)).toBe(1);
  });
});
