import { runInDurableObject } from "cloudflare:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { routerIdentity } from "../../../durable-objects/deployment.ts";
import { PoolHandover } from "../../../durable-objects/pool-handover.ts";
import { api, env, json, MinerSet, ORIGIN, replicaOutcome as outcome, poolStub, TestMiner, uniq, waitFor } from "../helpers.ts";

// A shard-count change through the router itself: this project runs with POOL_SHARDS = 4 and
// POOL_SHARDS_FROM = 1 (vitest.config.ts), i.e. a network that ran one pool object ("pool", now the directory)
// and was redeployed with four shards. A miner with history from before the change registers through the
// route and keeps it (durable-objects/pool-handover.ts; test/unit/pool-handover.test.ts covers the cases).

const miners = new MinerSet();
afterEach(() => miners.closeAll());

interface Ledger {
  reputation: { score: number; tasks: number };
  entries: { kind: string; amount: number }[];
}

describe("changing POOL_SHARDS from 1 to 4 (POOL_SHARDS_FROM = 1)", () => {
  it("a miner registered before the change keeps its reputation and ledger when it registers again, and the old object lets it go", async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const a = account.address.toLowerCase();
    const router = routerIdentity(env, ORIGIN);
    // Before the change: the one pool object registered it and recorded its work. Its handover reads the old
    // layout for this step only (one shard, no handover in progress), as the deployment before did.
    const old = { ...env, POOL_SHARDS: "1", POOL_SHARDS_FROM: "" } as Env;
    await runInDurableObject(poolStub(), (instance, state) => {
      Object.assign(instance, { handover: new PoolHandover(state, old) });
    });
    const ch = await poolStub().challenge(account.address, router);
    const req = { address: account.address, nonce: ch.nonce, signature: await account.signMessage({ message: ch.message }) };
    const out = await poolStub().register({ ...req, models: ["m"], device: "cpu", capacity: 1, stake: 1000 }, router);
    expect(out.ok).toBe(true);
    await poolStub().recordOutcomes([outcome(a, "agreed", 10, "1"), outcome(a, "agreed", 12, "2"), outcome(a, "outlier", 0, "3")]);
    await runInDurableObject(poolStub(), (instance, state) => {
      Object.assign(instance, { handover: new PoolHandover(state, env) });
    });

    // After the change: it registers through the router, which sends it to its new shard.
    const m = new TestMiner({ models: [uniq("model")] }, account);
    await m.register();
    await m.connectPool();
    miners.all.push(m);
    const ledger = await json<Ledger>(await api("GET", `/miners/${a}/ledger`));
    // Two rewards and the outlier's (zero) penalty, as the old object wrote them.
    expect(ledger.entries.map((e) => `${e.kind} ${e.amount}`).sort()).toEqual(["penalty 0", "reward 10", "reward 12"]);
    expect(ledger.reputation.tasks).toBe(3);
    expect(ledger.reputation.score).toBeCloseTo(3 / 4);
    // The old object no longer holds it once the new shard confirmed.
    await waitFor(
      () =>
        runInDurableObject(
          poolStub(),
          (_, state) => state.storage.sql.exec(`SELECT 1 FROM miners WHERE address = ?`, a).toArray().length === 0,
        ),
      "the old pool object to drop the miner",
    );
  });
});
