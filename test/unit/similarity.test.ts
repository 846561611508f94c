import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { cosineDistance, distanceMatrix, judgeSimilarity, medianMatrix, wellFormed } from "../../durable-objects/similarity.ts";
import type { EmbedMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import type { TaskView } from "../../shared/views.ts";
import {
  api,
  complete,
  createSession,
  getTask,
  honestValidator,
  json,
  MinerSet,
  sessionStub,
  type TestMiner,
  uniq,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("similarity maths", () => {
  it("cosine distance, medoid choice, outliers and the median of validators' matrices", () => {
    expect(cosineDistance([1, 0], [1, 0])).toBeCloseTo(0);
    expect(cosineDistance([1, 0], [0, 2])).toBeCloseTo(1);
    expect(cosineDistance([1, 0], [-1, 0])).toBeCloseTo(2);
    expect(cosineDistance([0, 0], [1, 0])).toBe(1);

    const d = distanceMatrix([
      [1, 0.1],
      [1, 0.2],
      [0.9, 0.1],
      [0, 1],
    ]);
    const j = judgeSimilarity(d, 0.25);
    expect(j.outliers).toEqual([3]);
    expect(j.agreed).toEqual([0, 1, 2]);
    expect([0, 2]).toContain(j.chosen); // the most central of the three close vectors
    expect(j.distances[3]).toBeGreaterThan(0.25);
    // `eligible` steers the choice among agreeing outputs, never to an outlier.
    expect(judgeSimilarity(d, 0.25, (i) => i === 1).chosen).toBe(1);
    expect(judgeSimilarity(d, 0.25, (i) => i === 3).chosen).toBe(j.chosen);

    // One validator lying about every distance is outvoted by two honest ones.
    const liar = d.map((row) => row.map(() => 0));
    const m = medianMatrix([d, liar, d]);
    expect(m).toEqual(d);

    expect(
      wellFormed(
        [
          [1, 2],
          [3, 4],
        ],
        2,
      ),
    ).toBe(true);
    expect(wellFormed([[1, 2]], 2)).toBe(false);
    expect(wellFormed([[1, 2], [3]], 2)).toBe(false);
    expect(
      wellFormed(
        [
          [1, Number.NaN],
          [3, 4],
        ],
        2,
      ),
    ).toBe(false);
    expect(
      wellFormed(
        [
          [0, 0],
          [3, 4],
        ],
        2,
      ),
    ).toBe(false);
  });
});

/** Three replica miners with given texts, all able to validate with `embed` unless told otherwise. */
async function replicas(
  model: string,
  embedModel: string,
  texts: string[],
  embed: (i: number) => ((m: EmbedMessage) => SessionMinerMessage | null) | undefined = () => honestValidator(embedModel),
): Promise<TestMiner[]> {
  const out: TestMiner[] = [];
  for (const [i, t] of texts.entries()) {
    out.push(await miners.start({ models: [model, embedModel], text: () => t, embed: embed(i) }));
  }
  return out;
}

const embedsSent = (ms: TestMiner[], sid: string) => ms.flatMap((m) => m.messages(sid).filter((x) => x.type === "embed"));

describe("similarity consensus in the SessionQueue", () => {
  it("auto: replicas that differ go to a validator; the junk replica is the named outlier", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const ms = await replicas(model, emb, [
      "the river runs down to the sea at night",
      "the river runs down to the sea at dawn",
      "lorem ipsum dolor sit amet quux zorp",
    ]);
    const sid = await createSession({ model, redundancy: 3, max_miners: 3, embedding_model: emb, dispersion_threshold: 0.5 });
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "where does the river go", temperature: 0.7 });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.consensus.method).toBe("similarity");
    expect(body.consensus.status).toBe("agreed");
    expect(body.consensus.outliers).toEqual([ms[2].address]);
    expect(new Set(body.consensus.agreed)).toEqual(new Set([ms[0].address, ms[1].address]));
    expect(body.choices[0].text).toMatch(/^the river runs down to the sea/);
    expect(body.consensus.similarity.model).toBe(emb);
    expect(body.consensus.similarity.threshold).toBe(0.5);
    // No miner outside the task: its replicas validate, three of them, and the median of their distances decides.
    expect(body.consensus.similarity.validators).toHaveLength(3);
    const dist = body.consensus.similarity.distances as Record<string, number>;
    expect(dist[ms[2].address]).toBeGreaterThan(0.5);
    expect(dist[body.consensus.agreed[0]] + dist[body.consensus.agreed[1]]).toBeLessThan(0.5);
    expect(embedsSent(ms, sid)).toHaveLength(3);

    const task = await getTask(sid, body.task_id);
    expect(task.consensus?.method).toBe("similarity");
    expect(task.replicas.find((r) => r.miner === ms[2].address)?.agreed).toBe(false);
    expect(task.replicas.filter((r) => r.agreed).length).toBe(2);
    // The outlier's reputation moved: the pool recorded it.
    await waitFor(async () => {
      const { nodes } = await json<{ nodes: { address: string; reputation: { outliers: number } }[] }>(await api("GET", "/miners"));
      return nodes.find((x) => x.address === ms[2].address)?.reputation.outliers === 1;
    }, "the outlier to be recorded");
  });

  it("exact sessions never ask validators: differing replicas get no answer (409), or one flagged best_effort", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const ms = await replicas(model, emb, ["one answer", "another answer", "a third answer"]);
    const sid = await createSession({ model, redundancy: 3, max_miners: 3, embedding_model: emb, consensus: "exact" });
    for (const m of ms) await m.join(sid);
    const res = await complete(sid, { prompt: "p", temperature: 0.7 });
    expect(res.status).toBe(409);
    expect((await json(res)).error.code).toBe("no_consensus");
    const lenient = await createSession({
      model,
      redundancy: 3,
      max_miners: 3,
      embedding_model: emb,
      consensus: "exact",
      best_effort: true,
    });
    for (const m of ms) await m.join(lenient);
    const body = await json(await complete(lenient, { prompt: "p", temperature: 0.7 }));
    expect(body.consensus).toMatchObject({ method: "exact", status: "no_quorum", best_effort: true });
    expect(embedsSent(ms, sid)).toHaveLength(0);
    expect(embedsSent(ms, lenient)).toHaveLength(0);
  });

  it("similarity sessions: each replica samples with its own seed, and a miner outside the task validates", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const text = (a: { params: { seed: number } }) => `answer number ${a.params.seed}`;
    const all: TestMiner[] = [];
    for (let i = 0; i < 4; i++) all.push(await miners.start({ models: [model, emb], text, embed: honestValidator(emb) }));
    const sid = await createSession({
      model,
      redundancy: 3,
      max_miners: 4,
      embedding_model: emb,
      consensus: "similarity",
      dispersion_threshold: 0.6,
    });
    for (const m of all) await m.join(sid);

    const body = await json(await complete(sid, { prompt: "sample", temperature: 0.9 }));
    const task: TaskView = await getTask(sid, body.task_id);
    const seeds = all.flatMap((m) =>
      m
        .assignsFor(sid)
        .filter((a) => a.task_id === body.task_id)
        .map((a) => a.params.seed),
    );
    expect(seeds).toHaveLength(3);
    expect(new Set(seeds).size).toBe(3);
    expect(body.consensus.method).toBe("similarity");
    expect(body.consensus.status).toBe("agreed");
    expect(body.consensus.outliers).toEqual([]);
    expect(body.consensus.similarity.validators).toHaveLength(1);
    expect(task.assigned_miners).not.toContain(body.consensus.similarity.validators[0]);
    expect(body.choices[0].text).toMatch(/^answer number \d+$/);

    // A pinned seed (or greedy decoding) keeps every replica identical: exact agreement, no validator.
    const before = embedsSent(all, sid).length;
    const pinned = await json(await complete(sid, { prompt: "pinned", temperature: 0.9, seed: 7 }));
    expect(pinned.consensus.method).toBe("exact");
    expect(pinned.consensus.status).toBe("agreed");
    expect(pinned.choices[0].text).toBe("answer number 7");
    expect(embedsSent(all, sid).length).toBe(before);
  });

  it("similarity: a replica that times out with nobody to replace it does not stall the task; it validates only as the third", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const ms = await replicas(model, emb, ["alpha beta gamma delta", "alpha beta gamma epsilon", "unused"]);
    ms[2].behaviour = "never_ack";
    // Two replicas left cannot judge each other (replicas validate only three at a time, validators.ts): the
    // timed-out one makes up the three, so the two honest samples, whose hashes differ, are judged and agree.
    const sid = await createSession({
      model,
      redundancy: 3,
      max_miners: 3,
      embedding_model: emb,
      consensus: "similarity",
      dispersion_threshold: 0.5,
      ack_timeout: 1,
      task_timeout: 30,
    });
    for (const m of ms) await m.join(sid);
    const t0 = Date.now();
    const res = await complete(sid, { prompt: "p", temperature: 0.8 });
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(body.consensus).toMatchObject({ method: "similarity", status: "agreed", outliers: [] });
    expect(new Set(body.consensus.agreed)).toEqual(new Set([ms[0].address, ms[1].address]));
    expect(new Set(body.consensus.similarity.validators)).toEqual(new Set(ms.map((m) => m.address)));
    expect(embedsSent(ms, sid)).toHaveLength(3);
    const task = await getTask(sid, body.task_id);
    expect(task.replicas.find((r) => r.miner === ms[2].address)?.state).toBe("timed_out");
  });

  it("similarity: a slot a busy miner can still fill is waited for, and that replica is judged, not left a straggler", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const words = ["alpha beta gamma delta one", "alpha beta gamma delta two", "alpha beta gamma delta three"];
    const ms: TestMiner[] = [];
    for (const [i, w] of words.entries()) {
      ms.push(
        await miners.start({
          models: [model, emb],
          text: () => w,
          embed: honestValidator(emb),
          ...(i === 2 ? { behaviour: "hold", capacity: 1 } : {}),
        }),
      );
    }
    const sid = await createSession({
      model,
      redundancy: 3,
      max_miners: 3,
      embedding_model: emb,
      consensus: "similarity",
      dispersion_threshold: 0.6,
    });
    for (const m of ms) await m.join(sid);
    const tidsOf = (m: TestMiner) => m.assignsFor(sid).map((a) => a.task_id);

    // T1 holds the busy miner's only slot; T2 then starts on the other two.
    const first = complete(sid, { prompt: "one", temperature: 0.8 });
    const t1 = await waitFor(async () => tidsOf(ms[2])[0], "T1 on the busy miner");
    const second = complete(sid, { prompt: "two", temperature: 0.8 });
    const t2 = await waitFor(async () => tidsOf(ms[0]).find((t) => t !== t1), "T2 on the others");
    await waitFor(async () => {
      const t = await getTask(sid, t2);
      return t.replicas.filter((r) => r.state === "committed").length === 2 ? t : null;
    }, "T2's two replicas to commit");
    await new Promise((r) => setTimeout(r, 300));
    expect((await getTask(sid, t2)).status).not.toBe("closed");
    expect(embedsSent(ms, sid).filter((e) => e.task_id === t2)).toHaveLength(0);

    await ms[2].finish(sid, t1);
    expect((await first).status).toBe(200);
    await waitFor(async () => tidsOf(ms[2]).includes(t2), "T2's third replica on the freed miner");
    await waitFor(async () => ms[2].held.has(`${sid}/${t2}`), "T2's third result");
    await ms[2].finish(sid, t2);
    const body = await json(await second);
    expect(body.consensus.method).toBe("similarity");
    expect(new Set(body.consensus.agreed)).toEqual(new Set(ms.map((m) => m.address)));
    const task = await getTask(sid, t2);
    expect(task.replicas.every((r) => r.state === "committed" && r.agreed === true && !/after the quorum/.test(r.reason ?? ""))).toBe(true);
  });

  it("a validator with malformed vectors is replaced by another", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    // Five miners, three replicas: the two outside the task validate. Whichever is asked first answers malformed
    // vectors; the next one asked answers honestly.
    let asked = 0;
    const validator = (m: EmbedMessage): SessionMinerMessage =>
      asked++ === 0 ? { type: "embeddings", task_id: m.task_id, model: emb, vectors: [[1, 2]] } : honestValidator(emb)(m);
    const words = ["alpha beta gamma", "alpha beta delta", "alpha beta epsilon", "alpha beta zeta", "alpha beta eta"];
    const ms = await replicas(model, emb, words, () => validator);
    const sid = await createSession({ model, redundancy: 3, max_miners: 5, embedding_model: emb, dispersion_threshold: 0.5 });
    for (const m of ms) await m.join(sid);
    const body = await json(await complete(sid, { prompt: "p", temperature: 0.5 }));
    expect(body.consensus.method).toBe("similarity");
    const embeds = ms.filter((m) => embedsSent([m], sid).length > 0);
    expect(embeds).toHaveLength(2);
    expect(body.consensus.similarity.validators).toHaveLength(1);
    expect(embeds.map((m) => m.address)).toContain(body.consensus.similarity.validators[0]);
    expect((await getTask(sid, body.task_id)).assigned_miners).not.toContain(body.consensus.similarity.validators[0]);
  });

  it("when no validator answers before the deadline the task falls back to exact hashes, saying why", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    const ms = await replicas(model, emb, ["x one", "x two", "x three"], () => () => null);
    // Three different hashes are no quorum: only a best_effort session gets an answer, flagged so.
    const sid = await createSession({ model, redundancy: 3, max_miners: 3, embedding_model: emb, task_timeout: 3, best_effort: true });
    for (const m of ms) await m.join(sid);
    const body = await json(await complete(sid, { prompt: "p", temperature: 0.5 }));
    expect(body.consensus.method).toBe("exact");
    expect(body.consensus.status).toBe("no_quorum");
    expect(body.consensus.best_effort).toBe(true);
    expect(body.consensus.note).toMatch(/no validator answered/);
    expect(embedsSent(ms, sid).length).toBeGreaterThanOrEqual(1);
  });

  it("a validation in flight survives eviction: the restored object asks again and closes the task", async () => {
    const model = uniq("model");
    const emb = uniq("embed");
    let answering = false;
    const gated = (m: EmbedMessage) => (answering ? honestValidator(emb)(m) : null);
    const ms = await replicas(model, emb, ["red green blue", "red green yellow", "one two three"], () => gated);
    const sid = await createSession({
      model,
      redundancy: 3,
      max_miners: 3,
      embedding_model: emb,
      dispersion_threshold: 0.5,
      task_timeout: 60,
    });
    for (const m of ms) await m.join(sid);
    const ac = new AbortController();
    const pending = complete(sid, { prompt: "colours", temperature: 0.5 }, { signal: ac.signal }).catch(() => null);
    await waitFor(() => embedsSent(ms, sid).length >= 1, "the first embed request");
    const tid = (embedsSent(ms, sid)[0] as EmbedMessage).task_id;
    ac.abort();
    await pending;

    answering = true;
    await evictDurableObject(sessionStub(sid), { webSockets: "hibernate" });
    const task = await waitForStatus(sid, tid, "closed", 15_000);
    expect(embedsSent(ms, sid).length).toBeGreaterThanOrEqual(2);
    expect(task.consensus?.method).toBe("similarity");
    expect(task.consensus?.outliers).toEqual([ms[2].address]);
  });
});
