import { afterEach, describe, expect, it } from "vitest";
import type { MinerView } from "../../durable-objects/node-pool.ts";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import { api, complete, createSession, errorOf, json, MinerSet, poolStub, TestMiner, uniq, waitFor } from "./helpers.ts";

// Reputation, stake and the ledger: the SessionQueue reports each finished task's replica outcomes to the
// NodePool (batched, off the hot path), which rewards, slashes, penalises and benches. MIN_STAKE is 100 here.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

// The router's own response types, so the tests read what /miners and the ledger route really return.
type Node = MinerView;
type Entry = LedgerEntry;

async function node(m: TestMiner): Promise<Node> {
  const { nodes } = await json<{ nodes: Node[] }>(await api("GET", "/miners"));
  return nodes.find((n) => n.address === m.address)!;
}

async function ledger(m: TestMiner): Promise<Entry[]> {
  const res = await api("GET", `/miners/${m.address}/ledger`);
  expect(res.status).toBe(200);
  return (await json<{ entries: Entry[] }>(res)).entries;
}

describe("stake", () => {
  it("refuses a registration below MIN_STAKE with 403 forbidden, and lists the stake of one above it", async () => {
    const poor = new TestMiner({ models: [uniq("model")], stake: 50 });
    await expect(poor.register()).rejects.toThrow(/register: 403/);
    const res = await api("POST", "/miners/register", {}, { key: null });
    expect(res.status).toBe(400);

    const rich = await miners.start({ models: [uniq("model")], stake: 500 });
    expect(await node(rich)).toMatchObject({
      status: "online",
      stake: 500,
      balance: 0,
      reputation: { score: 1, tasks: 0, agreement_rate: null, slashes: 0 },
    });
    const { nodes } = await json<{ nodes: Node[] }>(await api("GET", "/miners"));
    expect(nodes.some((n) => n.address === poor.address)).toBe(false);
  });

  it("the refusal is the house error shape with the minimum in its details", async () => {
    const m = new TestMiner({ models: [uniq("model")] });
    const ch = await (await api("POST", "/miners/challenge", { address: m.account.address }, { key: null })).json<{
      message: string;
      nonce: string;
    }>();
    const signature = await m.account.signMessage({ message: ch.message });
    const body = { address: m.account.address, nonce: ch.nonce, signature, models: ["x"], device: "cpu", capacity: 1, stake: 99 };
    const res = await api("POST", "/miners/register", body, { key: null });
    expect(res.status).toBe(403);
    const err = await errorOf(res);
    expect(err.error.code).toBe("forbidden");
    expect(err.error.details).toMatchObject({ stake: 99, min_stake: 100 });
  });

  it("the ledger route needs an API key and a valid address", async () => {
    expect((await api("GET", `/miners/0x${"a".repeat(40)}/ledger`, undefined, { key: null })).status).toBe(401);
    expect((await errorOf(await api("GET", "/miners/0x12/ledger"))).error.code).toBe("invalid_request");
    expect((await errorOf(await api("GET", `/miners/0x${"b".repeat(40)}/ledger`))).error.code).toBe("not_found");
  });
});

describe("ledger and reputation", () => {
  it("replicas in consensus share the task's usage as rewards and their agreement rate rises", async () => {
    const model = uniq("model");
    const a = await miners.start({ models: [model] });
    const b = await miners.start({ models: [model] });
    const sid = await createSession({ model, redundancy: 2 });
    await a.join(sid);
    await b.join(sid);
    const bodies = [];
    for (const prompt of ["first", "second"]) {
      const res = await complete(sid, { prompt });
      expect(res.status).toBe(200);
      bodies.push(await json(res));
    }
    for (const m of [a, b]) {
      const entries = await waitFor(async () => {
        const e = await ledger(m);
        return e.length === 2 ? e : null;
      }, `two rewards for ${m.address}`);
      // Newest first; each is half the task's total tokens.
      expect(entries.map((e) => [e.kind, e.task_id, e.amount])).toEqual(
        bodies.map((b) => ["reward", b.task_id, Math.floor(b.usage.total_tokens / 2)]).reverse(),
      );
      expect(entries[0].session_id).toBe(sid);
      const n = await node(m);
      expect(n.reputation).toMatchObject({ tasks: 2, agreement_rate: 1, precommit_success_rate: 1, score: 1, slashes: 0 });
      expect(n.balance).toBe(entries.reduce((s, e) => s + e.amount, 0));
      expect(n.balance).toBeGreaterThan(0);
    }
  });

  it("a straggler that precommitted in time but commits after consensus closed the task is judged, unrewarded", async () => {
    const model = uniq("model");
    const fast = [await miners.start({ models: [model], delayMs: 100 }), await miners.start({ models: [model], delayMs: 100 })];
    const slow = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, redundancy: 3 });
    for (const m of [...fast, slow]) await m.join(sid);
    const pending = complete(sid, { prompt: "who is late" });
    const a = await slow.nextAssign(sid);
    const text = slow.textFor(a);
    slow.ack(sid, a.task_id);
    await slow.precommit(sid, a.task_id, text);
    const res = await pending;
    expect(res.status).toBe(200);
    await waitFor(async () => (await node(fast[1])).reputation.tasks === 1, "the quorum's outcomes");
    expect((await node(slow)).reputation.tasks).toBe(0);
    slow.commit(sid, a.task_id, text);
    const n = await waitFor(async () => {
      const x = await node(slow);
      return x.reputation.tasks === 1 ? x : null;
    }, "the straggler's outcome");
    expect(n.reputation).toMatchObject({ agreement_rate: 1, outliers: 0 });
    expect(await ledger(slow)).toEqual([]);
  });

  it("a bad signature is slashed: a slash entry, less stake, a negative balance", async () => {
    const model = uniq("model");
    const forger = await miners.start({ models: [model], behaviour: "bad_signature", stake: 1000 });
    const sid = await createSession({ model });
    await forger.join(sid);
    const pending = complete(sid, { prompt: "sign here" });
    const a = await forger.nextAssign(sid);
    await waitFor(() => forger.messages(sid, a.task_id).some((m) => m.type === "cancel"), "cancel to the forger");
    const honest = await miners.start({ models: [model] });
    await honest.join(sid);
    expect((await pending).status).toBe(200);

    const entries = await waitFor(async () => {
      const e = await ledger(forger);
      return e.length ? e : null;
    }, "the forger's ledger entry");
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ kind: "slash", amount: 100, task_id: a.task_id, session_id: sid });
    expect(entries[0].reason).toMatch(/signature/);
    expect(entries[0].block).toBeGreaterThan(0);
    const n = await node(forger);
    expect(n).toMatchObject({ stake: 900, balance: -100 });
    expect(n.reputation).toMatchObject({ slashes: 1, tasks: 1, precommit_success_rate: 0, score: 0.5 });
    // The honest miner that finished the task was rewarded with all of it.
    await waitFor(async () => (await ledger(honest)).some((e) => e.kind === "reward" && e.task_id === a.task_id), "the honest reward");
  });

  it("an outlier among three replicas gets a penalty; the two in consensus are rewarded", async () => {
    const model = uniq("model");
    // The liar commits first, so its result is in before consensus closes the task.
    const liar = await miners.start({ models: [model], text: () => "a different answer" });
    const honest = [await miners.start({ models: [model], delayMs: 60 }), await miners.start({ models: [model], delayMs: 60 })];
    const sid = await createSession({ model, redundancy: 3 });
    for (const m of [liar, ...honest]) await m.join(sid);
    const res = await complete(sid, { prompt: "agree with me" });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.choices[0].text).toBe("answer to agree with me");

    const penalty = await waitFor(async () => (await ledger(liar)).find((e) => e.kind === "penalty"), "the outlier penalty");
    expect(penalty).toMatchObject({ amount: 0, task_id: body.task_id });
    expect(penalty.reason).toMatch(/consensus/);
    expect((await ledger(liar)).some((e) => e.kind === "reward")).toBe(false);
    const n = await node(liar);
    expect(n.reputation).toMatchObject({ outliers: 1, agreement_rate: 0, tasks: 1 });
    expect(n.reputation.score).toBeLessThan(1);
    expect(n.stake).toBe(1000); // a disagreement is not a provable fault: no slash
    for (const m of honest) {
      await waitFor(
        async () => (await ledger(m)).some((e) => e.kind === "reward" && e.amount === Math.floor(body.usage.total_tokens / 2)),
        "a reward",
      );
    }
  });

  it("a miner that misses its ack deadline gets a timeout penalty and its timeouts count rises", async () => {
    const model = uniq("model");
    const silent = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 0.2 });
    await silent.join(sid);
    const res = await complete(sid, { prompt: "anyone?", timeout: 1 });
    expect(res.status).toBe(504);
    const n = await waitFor(async () => {
      const x = await node(silent);
      return x.reputation.timeouts === 1 ? x : null;
    }, "the timeout on record");
    expect(n.reputation).toMatchObject({ tasks: 1, precommit_success_rate: 0, slashes: 0 });
    expect(n.stake).toBe(1000);
    const entries = await ledger(silent);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ kind: "penalty", amount: 0 });
    expect(entries[0].reason).toMatch(/ack deadline/);
  });

  it("a miner whose score falls below the floor after 10 tasks is benched and no longer assigned", async () => {
    const model = uniq("model");
    const forger = await miners.start({ models: [model], behaviour: "bad_signature", capacity: 4 });
    const sid = await createSession({ model });
    await forger.join(sid);
    // Ten tasks, each rejected for its signature; with no one else to take them they time out.
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => complete(sid, { prompt: `task ${i}`, timeout: 1 })));
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(504));
    expect(forger.assigns.filter((a) => a.sid === sid)).toHaveLength(10);

    const n = await waitFor(async () => {
      const x = await node(forger);
      return x.status === "benched" ? x : null;
    }, "the forger to be benched");
    expect(n.reputation).toMatchObject({ tasks: 10, slashes: 10 });
    expect(n.reputation.score).toBeLessThan(0.2);
    expect(n.sessions).toEqual([]);
    await waitFor(() => !forger.poolSessions().includes(sid), "the pool to take the session from the forger");

    // Still connected to the session, but the queue no longer gives it work: alone, nobody serves the session, and
    // a submit is refused at once (503) instead of waiting for its deadline.
    const refused = await complete(sid, { prompt: "benched?", timeout: 0.5 });
    expect(refused.status).toBe(503);
    expect((await errorOf(refused)).error.code).toBe("no_miner_available");
    expect(forger.assigns.filter((a) => a.sid === sid)).toHaveLength(10);
    const honest = await miners.start({ models: [model] });
    await honest.join(sid);
    for (let i = 0; i < 3; i++) expect((await complete(sid, { prompt: `after ${i}` })).status).toBe(200);
    expect(forger.assigns.filter((a) => a.sid === sid)).toHaveLength(10);
    expect((await node(honest)).status).toBe("online");
  });
});

describe("assignment prefers reputation", () => {
  it("the pool gives a session with room for one miner to the more reputable of two equally loaded ones", async () => {
    const model = uniq("model");
    const shaky = await miners.start({ models: [model] });
    const solid = await miners.start({ models: [model] });
    const at = Date.now();
    await poolStub().recordOutcomes([
      {
        miner: shaky.address,
        session_id: "elsewhere",
        task_id: "1",
        outcome: "timed_out",
        reason: "test",
        latency_ms: null,
        reward: 0,
        at,
        block: 1,
      },
    ]);
    expect((await node(shaky)).reputation.score).toBe(0.5);
    // The reputable miner already serves a dedicated session, so by load alone the shaky one would be next.
    const busy = await createSession({ model, mode: "dedicated", dedicated_miners: [solid.address] });
    await waitFor(() => solid.poolSessions().includes(busy), "the dedicated session");
    const sid = await createSession({ model, max_miners: 1 });
    await waitFor(() => solid.poolSessions().includes(sid), "the session for the reputable miner");
    expect(shaky.poolSessions()).not.toContain(sid);
  });

  it("the session queue gives work to the more reputable of two idle miners", async () => {
    const model = uniq("model");
    const shaky = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 0.2 });
    await shaky.join(sid);
    expect((await complete(sid, { prompt: "late", timeout: 1 })).status).toBe(504);
    await waitFor(async () => (await node(shaky)).reputation.timeouts === 1, "the timeout on record");
    shaky.behaviour = "honest";
    const solid = await miners.start({ models: [model] });
    await solid.join(sid);
    const pick = async (prompt: string) => (await json(await complete(sid, { prompt }))).miners[0].address;
    for (let i = 0; i < 3; i++) expect(await pick(`pick ${i}`)).toBe(solid.address);
    // Whatever order the queue lists its sockets in, reputation decides: rejoin so the order flips.
    shaky.leave(sid);
    await waitFor(
      async () => !(await json(await api("GET", `/sessions/${sid}`))).usage.connected_miners.includes(shaky.address),
      "shaky gone",
    );
    await shaky.join(sid);
    for (let i = 0; i < 3; i++) expect(await pick(`again ${i}`)).toBe(solid.address);
    expect(shaky.assigns.filter((a) => a.sid === sid)).toHaveLength(1);
  });
});
