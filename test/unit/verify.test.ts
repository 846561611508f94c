import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { Replica } from "../../durable-objects/session-queue/task.ts";
import { judgeAnswer, spotDetection, spotPositions } from "../../durable-objects/session-queue/verify-judge.ts";
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
    const text = String.fromCodePoint(...msg.token_ids);
    const asked = msg.positions ?? msg.token_ids.map((_, i) => i);
    const failures: VerifyFailure[] = bad(text, msg)
      .filter((p) => asked.includes(p))
      .map((pos) => ({ pos, token: msg.token_ids[pos], expected: 32, margin: -0.5 }));
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
    expect(String.fromCodePoint(...sent[0].msg.token_ids)).toBe("a fine answer");
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
    expect(verifiesSent(honest, sid).filter((s) => s.msg.token_ids.length === 12)).toHaveLength(2);
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

  it("a verification in flight at an eviction: the restored queue closes the task unverified and says why", async () => {
    const model = uniq("model");
    const silent = () => null; // asked, never answers
    const ms = [
      await miners.start({ models: [model], text: () => "kept", verify: silent }),
      await miners.start({ models: [model], text: () => "kept", verify: silent }),
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
    const task = await waitForStatus(sid, tid, "closed", 15_000);
    expect(task.consensus?.method).toBe("single");
    expect(task.consensus?.note).toBe("the replica's token ids were lost (the session restarted); not verified");
    expect(task.result?.text).toBe("kept");
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
