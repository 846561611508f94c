import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, TEST_VARS, until } from "../helpers/network.ts";

// Changing the shard count for real (durable-objects/pool-handover.ts): wrangler dev with one pool object, a
// real miner-agent process that earns a reward there, then the same state restarted with POOL_SHARDS = 4 and
// POOL_SHARDS_FROM = 1. The agent's old token is refused at its new shard, it registers again by itself, and its
// reputation and ledger arrive there with it; the operator's count goes to zero and the miner serves again.

let router: Router;
let miner: Miner;
const admin = { key: null, headers: { authorization: `Bearer ${TEST_VARS.ADMIN_SECRET}` } };

beforeAll(async () => {
  router = await startRouter({ vars: { POOL_SHARDS: "1" } });
  miner = await startMiner(router.url, { name: "reshard" });
  await miner.waitFor("ready");
});

afterAll(async () => {
  await miner?.stop("SIGKILL");
  await router?.stop();
});

describe("POOL_SHARDS 1 → 4 with POOL_SHARDS_FROM = 1", () => {
  it("the agent registers again at its new shard and keeps its reputation and ledger; nothing is left behind", async () => {
    const first = await api(router, "/api/v1/completions", { body: { prompt: "Before", max_tokens: 4 } });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const address = (first.body.miners as { address: string }[])[0].address;
    const before = await until(async () => {
      const res = await api(router, `/api/v1/miners/${address}/ledger`);
      return res.body.reputation?.tasks >= 1 && res.body;
    }, 15_000);
    // No handover in progress: the operator's route says so.
    expect((await api(router, "/admin/pool/handover", admin)).body).toEqual({ handover: null });

    await router.stop();
    router = await startRouter({ port: router.port, persistDir: router.persistDir, vars: { POOL_SHARDS: "4", POOL_SHARDS_FROM: "1" } });
    // The agent reconnects, is told to register again (its old shard's token means nothing at the new one) and does.
    const after = await until(async () => {
      const res = await api(router, `/api/v1/miners/${address}/ledger`);
      return res.status === 200 && res.body;
    }, 60_000);
    expect(after.reputation).toEqual(before.reputation);
    expect(after.entries.map((e: { kind: string; amount: number }) => [e.kind, e.amount])).toEqual(
      before.entries.map((e: { kind: string; amount: number }) => [e.kind, e.amount]),
    );
    const progress = await until(async () => {
      const res = await api(router, "/admin/pool/handover", admin);
      return res.body.handover?.left === 0 && res.body.handover;
    }, 40_000);
    expect(progress).toMatchObject({ from: 1, to: 4, left: 0 });
    // A client key cannot read it.
    expect((await api(router, "/admin/pool/handover")).status).toBe(401);
    // And the miner serves the default session again from its new shard.
    const again = await until(async () => {
      const res = await api(router, "/api/v1/completions", { body: { prompt: "After", max_tokens: 4 } });
      return res.status === 200 && res;
    }, 60_000);
    expect((again.body.miners as { address: string }[])[0].address).toBe(address);
  });
});
