import { createExecutionContext, evictDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import { EMBEDDING_TOLERANCE, embeddingTokens, judgeEmbeddings } from "../../durable-objects/session-queue/embedding-consensus.ts";
import type { EmbedMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import type { TaskView } from "../../shared/views.ts";
import app from "../../workers/index.ts";
import {
  api,
  bagOfWords,
  createSession,
  env,
  errorOf,
  getSession,
  getTask,
  json,
  MinerSet,
  ORIGIN,
  poolStub,
  sessionStub,
  sleep,
  type TestMiner,
  uniq,
  waitFor,
} from "./helpers.ts";

// POST /api/v1/embeddings with protocol-correct test miners: a job asked of k distinct miners through `embed`,
// judged by cosine distance to the medoid (durable-objects/session-queue/embedding-jobs.ts). The test miners'
// "model" is a deterministic bag of words, so honest miners agree exactly, as the real embedder's do.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

type EmbedReply = (msg: EmbedMessage) => SessionMinerMessage | null;
/** How a test miner answers `embed`, given the embedding model it serves. */
type Miner = (model: string) => EmbedReply;
const silent: Miner = () => () => null;
const failing: Miner = () => (msg) => ({ type: "embed_failed", task_id: msg.task_id, reason: "no model" });
const honest: Miner = (model) => (msg) => ({ type: "embeddings", task_id: msg.task_id, model, vectors: msg.texts.map(bagOfWords) });
/** Unit vectors in random directions: what a miner that runs no model might send. */
const junk: Miner = (model) => (msg) => ({
  type: "embeddings",
  task_id: msg.task_id,
  model,
  vectors: msg.texts.map(() => randomVector(64)),
});

function randomVector(n: number): number[] {
  return Array.from({ length: n }, () => Math.random() * 2 - 1);
}

/** A session of `k` redundancy whose miners serve `model` and the embedding model `embed`. */
async function setup(k: number, replies: Miner[], extra: Record<string, unknown> = {}) {
  const model = uniq("model");
  const embed = uniq("embed");
  const sid = await createSession({
    model,
    embedding_model: embed,
    redundancy: k,
    max_miners: 8,
    ack_timeout: 1,
    task_timeout: 30,
    ...extra,
  });
  const ms: TestMiner[] = [];
  for (const reply of replies) {
    const m = await miners.start({ models: [model, embed], embed: reply(embed) });
    await m.join(sid);
    ms.push(m);
  }
  return { sid, embed, miners: ms };
}

const embedTexts = (sid: string, body: Record<string, unknown>, opts: { signal?: AbortSignal } = {}) =>
  api("POST", `/embeddings/${sid}`, body, opts);

async function ledger(m: TestMiner): Promise<LedgerEntry[]> {
  return (await json<{ entries: LedgerEntry[] }>(await api("GET", `/miners/${m.address}/ledger`))).entries;
}

/** The embed messages a miner received for job `tid`. */
const asked = (m: TestMiner, sid: string, tid: string) => m.messages(sid, tid).filter((x) => x.type === "embed");

const BOB_KEY = "bob-key-0123456789abcdef0123456789";
/** A request as tenant `bob` (a second static key), through the real app. */
async function asBob(method: string, path: string, body?: unknown): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${BOB_KEY}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    { ...env, API_KEYS: `${env.API_KEYS},bob:${BOB_KEY}` },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

describe("embedding consensus (pure)", () => {
  it("the medoid is the answer most others agree with; a far answer is an outlier", () => {
    const a = [
      [1, 0, 0],
      [0, 1, 0],
    ];
    const nearA = [
      [1, 1e-4, 0],
      [0, 1, 1e-4],
    ];
    const liar = [
      [1, 0, 0],
      [1, 0, 0],
    ]; // one faked vector of two is enough to disagree
    const j = judgeEmbeddings([liar, a, nearA]);
    expect(j.medoid).toBe(1);
    expect(j.agreed).toEqual([1, 2]);
    expect(j.outliers).toEqual([0]);
    expect(j.distances[0]).toBeGreaterThan(EMBEDDING_TOLERANCE);
    // Vectors of another dimension never agree.
    expect(
      judgeEmbeddings([
        a,
        [
          [1, 0],
          [0, 1],
        ],
      ]).agreed,
    ).toHaveLength(1);
  });

  it("charges ⌈UTF-8 bytes / 4⌉ tokens per text, at least one", () => {
    expect(embeddingTokens(["a"])).toBe(1);
    expect(embeddingTokens(["abcd", "abcde"])).toBe(1 + 2);
    expect(embeddingTokens(["é".repeat(4)])).toBe(2); // 8 bytes
  });
});

describe("POST /api/v1/embeddings", () => {
  it("k = 3 honest miners agree: the vectors in input order, usage charged, the job in the task view and list", async () => {
    const { sid, embed, miners: ms } = await setup(3, [honest, honest, honest]);
    const before = (await getSession(sid)).usage.used;
    const texts = ["the edge network", "miners embed texts", "zebra quartz"];
    const res = await embedTexts(sid, { input: texts });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.object).toBe("list");
    expect(body.model).toBe(embed);
    expect(body.data.map((d: any) => d.index)).toEqual([0, 1, 2]);
    expect(body.data.map((d: any) => d.embedding)).toEqual(texts.map(bagOfWords));
    expect(body.data.every((d: any) => d.object === "embedding")).toBe(true);
    expect(body.usage).toEqual({ prompt_tokens: embeddingTokens(texts), total_tokens: embeddingTokens(texts) });
    expect(body.consensus).toMatchObject({ method: "embedding", status: "agreed", quorum: 2 });
    expect(new Set(body.consensus.agreed)).toEqual(new Set(ms.map((m) => m.address)));
    expect(body.miners).toHaveLength(3);
    expect(body.miners.every((m: any) => m.agreed === true && m.distance === 0)).toBe(true);
    expect(body.request_id).toBe(res.headers.get("X-Request-ID"));
    // Each miner was asked once, with every text.
    for (const m of ms) expect(asked(m, sid, body.task_id)).toEqual([expect.objectContaining({ texts, model: embed })]);
    expect((await getSession(sid)).usage.used).toBe(before + embeddingTokens(texts));
    // The job is a task of the session: its view (with the vectors) and the list (without them).
    const view = await getTask(sid, body.task_id);
    expect(view).toMatchObject({ kind: "embedding", status: "closed", model: embed, embedding: { texts, dimensions: 64 } });
    expect(view.embedding!.vectors).toEqual(texts.map(bagOfWords));
    expect(view.replicas.every((r) => r.state === "committed" && r.hash === view.result!.hash)).toBe(true);
    const list = await json<{ tasks: TaskView[] }>(await api("GET", `/tasks/${sid}`));
    expect(list.tasks[0]).toMatchObject({ task_id: body.task_id, kind: "embedding", embedding: { vectors: null } });
    // A single text is one vector too.
    const one = await json(await embedTexts(sid, { input: "zebra quartz" }));
    expect(one.data).toEqual([{ object: "embedding", index: 0, embedding: bagOfWords("zebra quartz") }]);
  });

  it("a lying miner's vectors are the outlier: the honest vectors answer and the liar gets a ledger penalty", async () => {
    const { sid, miners: ms } = await setup(3, [honest, junk, honest]);
    const [, liar] = ms;
    const res = await embedTexts(sid, { input: ["honest work", "more honest work"] });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.data.map((d: any) => d.embedding)).toEqual(["honest work", "more honest work"].map(bagOfWords));
    expect(body.consensus.status).toBe("agreed");
    expect(body.consensus.outliers).toEqual([liar.address]);
    expect(body.consensus.agreed).toHaveLength(2);
    expect(body.consensus.embedding.distances[liar.address]).toBeGreaterThan(EMBEDDING_TOLERANCE);
    expect(body.miners.find((m: any) => m.miner === liar.address).agreed).toBe(false);
    const penalty = await waitFor(async () => (await ledger(liar)).find((e) => e.task_id === body.task_id), "the liar's ledger entry");
    expect(penalty).toMatchObject({ kind: "penalty", amount: 0 });
    expect(penalty.reason).toMatch(/from the consensus/);
    const reward = await waitFor(async () => (await ledger(ms[0])).find((e) => e.task_id === body.task_id), "an honest reward");
    expect(reward).toMatchObject({ kind: "reward", amount: Math.floor(body.usage.prompt_tokens / 2) });
  });

  it("a silent miner is timed out and replaced; a failing one is replaced at once", async () => {
    const { sid, embed, miners: ms } = await setup(2, [silent, honest]);
    const [mute] = ms;
    const pending = embedTexts(sid, { input: ["replace the silent one"] });
    await waitFor(() => ms.every((m) => m.messages(sid).some((x) => x.type === "embed")), "both miners asked");
    // A third miner joins while the job waits: it is asked once the silent one's window ends.
    const spare = await miners.start({ models: [(await getSession(sid)).config.model, embed], embed: honest(embed) });
    await spare.join(sid);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.data[0].embedding).toEqual(bagOfWords("replace the silent one"));
    const states = Object.fromEntries(body.miners.map((m: any) => [m.miner, m.state]));
    expect(states).toEqual({ [mute.address]: "timed_out", [ms[1].address]: "committed", [spare.address]: "committed" });
    const entry = await waitFor(async () => (await ledger(mute)).find((e) => e.task_id === body.task_id), "the silent miner's penalty");
    expect(entry).toMatchObject({ kind: "penalty" });

    // embed_failed: the job goes to the next miner as soon as one is there, without waiting for a deadline.
    const refusing = await setup(1, [failing]);
    const job = embedTexts(refusing.sid, { input: ["x y"] });
    await waitFor(() => refusing.miners[0].sent.get(refusing.sid)?.some((x) => x.type === "embed_failed"), "the refusal");
    const other = await miners.start({
      models: [(await getSession(refusing.sid)).config.model, refusing.embed],
      embed: honest(refusing.embed),
    });
    const t0 = Date.now();
    await other.join(refusing.sid);
    const second = await json(await job);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(second.consensus).toMatchObject({ status: "agreed", agreed: [other.address] });
    expect(Object.fromEntries(second.miners.map((m: any) => [m.miner, m.state]))).toEqual({
      [refusing.miners[0].address]: "released",
      [other.address]: "committed",
    });
  });

  it("no quorum: 409 no_consensus; a best_effort session answers the medoid, flagged", async () => {
    const { sid, miners: ms } = await setup(3, [junk, junk, honest]);
    const res = await embedTexts(sid, { input: ["nobody agrees"] });
    expect(res.status).toBe(409);
    const err = await errorOf(res);
    expect(err.error.code).toBe("no_consensus");
    const tid = (err.error.details as { task_id: string }).task_id;
    const view = await getTask(sid, tid);
    expect(view).toMatchObject({ kind: "embedding", status: "failed", error: { code: "no_consensus" } });
    expect((await getSession(sid)).usage.used).toBe(0); // nothing charged without an answer
    // No ledger verdict without a consensus: nobody is rewarded or penalised for it.
    await sleep(400);
    for (const m of ms) expect((await ledger(m)).find((e) => e.task_id === tid)).toBeUndefined();

    const be = await setup(3, [junk, junk, honest], { best_effort: true });
    const flagged = await embedTexts(be.sid, { input: ["nobody agrees"] });
    expect(flagged.status).toBe(200);
    expect((await json(flagged)).consensus).toMatchObject({ status: "no_quorum", best_effort: true });
  });

  it("an eviction mid-job loses no answer: the restored queue asks only the missing miner, and the job closes", async () => {
    const { sid, embed, miners: ms } = await setup(2, [honest, silent]);
    const [quick, slow] = ms;
    const ac = new AbortController();
    const pending = embedTexts(sid, { input: ["survive the eviction"], timeout: 60 }, { signal: ac.signal }).catch(() => null);
    const tid = await waitFor(() => {
      const m = slow.messages(sid).find((x) => x.type === "embed");
      return m && "task_id" in m ? m.task_id : undefined;
    }, "the slow miner's embed");
    await waitFor(
      async () => (await getTask(sid, tid)).replicas.some((r) => r.miner === quick.address && r.state === "committed"),
      "the quick answer",
    );
    ac.abort();
    await pending;

    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    const mid = await getTask(sid, tid);
    expect(mid.status).not.toBe("closed");
    expect(mid.replicas.find((r) => r.miner === quick.address)?.state).toBe("committed");
    // The restored queue asked the slow miner again over its hibernated socket, not the one that answered.
    await waitFor(() => asked(slow, sid, tid).length === 2, "the embed re-sent to the slow miner");
    expect(asked(quick, sid, tid)).toHaveLength(1);
    slow.send(sid, { type: "embeddings", task_id: tid, model: embed, vectors: [bagOfWords("survive the eviction")] });
    const done = await waitFor(async () => {
      const t = await getTask(sid, tid);
      return t.status === "closed" ? t : undefined;
    }, "the job to close after the eviction");
    expect(done.consensus).toMatchObject({ method: "embedding", status: "agreed" });
    expect(done.embedding!.vectors).toEqual([bagOfWords("survive the eviction")]);
  });

  it("the owner cancels an open job: nothing charged, nobody blamed, the waiting request answers task_cancelled", async () => {
    const { sid, embed, miners: ms } = await setup(1, [silent]);
    const pending = embedTexts(sid, { input: ["never answered"] });
    const tid = await waitFor(() => {
      const m = ms[0].messages(sid).find((x) => x.type === "embed");
      return m && "task_id" in m ? m.task_id : undefined;
    }, "the embed");
    // A miner that was not asked cannot slip its vectors in.
    const outsider = await miners.start({ models: [(await getSession(sid)).config.model, embed] });
    await outsider.join(sid);
    outsider.send(sid, { type: "embeddings", task_id: tid, model: embed, vectors: [bagOfWords("never answered")] });
    const refusal = await waitFor(() => outsider.messages(sid, tid).find((m) => m.type === "error"), "the refusal");
    expect(refusal).toMatchObject({ code: "unknown_task" });
    expect((await getTask(sid, tid)).replicas.map((r) => r.miner)).toEqual([ms[0].address]);
    const cancelled = await api("POST", `/tasks/${sid}/${tid}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(await json(cancelled)).toMatchObject({ kind: "embedding", status: "failed", error: { code: "task_cancelled" } });
    const res = await pending;
    expect((await errorOf(res)).error.code).toBe("task_cancelled");
    expect((await getTask(sid, tid)).replicas[0].state).toBe("cancelled");
    expect((await getSession(sid)).usage).toMatchObject({ used: 0, reserved: 0 });
    // A repeat answers the same (as a task's cancel does), and changes nothing.
    const again = await api("POST", `/tasks/${sid}/${tid}/cancel`);
    expect(again.status).toBe(200);
    expect((await json(again)).error.code).toBe("task_cancelled");
    await sleep(400);
    expect((await ledger(ms[0])).find((e) => e.task_id === tid)).toBeUndefined();
  });

  it("tenancy: another key cannot read, list or run jobs on an owned session; on the shared session each sees its own", async () => {
    const { sid } = await setup(1, [honest]);
    const mine = await json(await embedTexts(sid, { input: ["private text"] }));
    expect((await asBob("GET", `/tasks/${sid}/${mine.task_id}`)).status).toBe(404);
    const list = await asBob("GET", `/tasks/${sid}`);
    expect(list.status).toBe(404);
    const run = await asBob("POST", `/embeddings/${sid}`, { input: ["on dev's session"] });
    expect(run.status).toBe(404);
    expect((await errorOf(run)).error.code).toBe("session_not_found");

    // A shared session (owner `*`, as the configured ones): bob's job is bob's alone.
    const model = uniq("model");
    const embed = uniq("embed");
    const base = (await sessionStub(await createSession({ model, embedding_model: embed })).describe())!.config;
    const shared = uniq("shared");
    const config = { ...base, id: shared, owner: "*", redundancy: 1 };
    expect((await sessionStub(shared).init(config)).ok).toBe(true);
    await poolStub().addSession(config);
    const m = await miners.start({ models: [model, embed], embed: honest(embed) });
    await m.join(shared);
    const bobs = await asBob("POST", `/embeddings/${shared}`, { input: ["bob's secret"] });
    expect(bobs.status).toBe(200);
    const tid = (await json(bobs)).task_id;
    expect((await asBob("GET", `/tasks/${shared}/${tid}`)).status).toBe(200);
    const devRead = await api("GET", `/tasks/${shared}/${tid}`);
    expect(devRead.status).toBe(404);
    expect((await errorOf(devRead)).error.code).toBe("task_not_found");
    const devList = await json<{ tasks: TaskView[] }>(await api("GET", `/tasks/${shared}`));
    expect(devList.tasks.map((t) => t.task_id)).not.toContain(tid);
    expect(JSON.stringify(devList)).not.toContain("bob's secret");
    const devs = await json(await embedTexts(shared, { input: ["dev's own"] }));
    expect((await json<{ tasks: TaskView[] }>(await asBob("GET", `/tasks/${shared}`))).tasks.map((t) => t.task_id)).toEqual([tid]);
    expect(devs.task_id).not.toBe(tid);
  });

  it("refuses bad bodies at the edge and unservable jobs at once", async () => {
    const { sid, embed } = await setup(1, [honest]);
    const bad = [
      { input: [] },
      { input: "" },
      { input: Array.from({ length: 17 }, (_, i) => `t${i}`) },
      { input: "x".repeat(8 * 1024 + 1) },
      { input: Array.from({ length: 9 }, () => "y".repeat(8000)) }, // 72 kB in all
      { input: [[1, 2, 3]] }, // token arrays are not taken
      { input: "ok", encoding_format: "base64" },
      { input: "ok", max_miners: 0 },
    ];
    for (const body of bad) {
      const res = await embedTexts(sid, body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect((await errorOf(res)).error.code).toBe("invalid_request");
    }
    const wrongModel = await embedTexts(sid, { input: "ok", model: "other/model" });
    expect(wrongModel.status).toBe(400);
    expect((await errorOf(wrongModel)).error.message).toContain(embed);
    expect((await api("POST", `/embeddings/${sid}`, { input: "ok" }, { key: null })).status).toBe(401);
    expect((await embedTexts(uniq("nobody"), { input: "ok" })).status).toBe(404);

    // A session whose miners serve no embedding model answers 503 at once.
    const model = uniq("model");
    const lonely = await createSession({ model, embedding_model: uniq("embed") });
    const m = await miners.start({ models: [model] });
    await m.join(lonely);
    const none = await embedTexts(lonely, { input: "ok" });
    expect(none.status).toBe(503);
    expect((await errorOf(none)).error.code).toBe("no_miner_available");

    // The deposit bounds what a job may cost.
    const poor = await setup(1, [honest], { deposit: 3 });
    const broke = await embedTexts(poor.sid, { input: ["sixteen bytes!!!"] });
    expect(broke.status).toBe(402);
    expect((await errorOf(broke)).error.code).toBe("deposit_exhausted");
  });
});
