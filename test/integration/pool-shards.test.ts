import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Hex, hexToNumber, keccak256, slice } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, tempDir, until } from "../helpers/network.ts";
import { registerRaw } from "../helpers/raw-miner.ts";

// A sharded pool for real: wrangler dev with POOL_SHARDS = 4 and three miner-agent processes whose wallets hash
// to shards 1, 2 and 3 (shard 0 empty). A completion needs all three (redundancy 3), so one session takes its
// miners from three shards; /miners pages across the shards; a revoke and the ledger go to the miner's shard.

const SHARDS = 4;
const shardOf = (address: string) => hexToNumber(slice(keccak256(address.toLowerCase() as Hex), 0, 4)) % SHARDS;

/** A wallet whose address lands in shard k. */
function walletIn(k: number): PrivateKeyAccount & { privateKey: Hex } {
  for (;;) {
    const privateKey = generatePrivateKey();
    const account = privateKeyToAccount(privateKey);
    if (shardOf(account.address) === k) return Object.assign(account, { privateKey });
  }
}

function keyFile(account: PrivateKeyAccount & { privateKey: Hex }): string {
  const file = join(tempDir("miner"), "key.json");
  const body = { address: account.address, private_key: account.privateKey, created_at: new Date().toISOString() };
  writeFileSync(file, JSON.stringify(body), { mode: 0o600 });
  return file;
}

let router: Router;
let miners: Miner[] = [];
const wallets = [1, 2, 3].map(walletIn);
const addresses = wallets.map((w) => w.address.toLowerCase());

beforeAll(async () => {
  router = await startRouter({ vars: { POOL_SHARDS: String(SHARDS) } });
  miners = await Promise.all(wallets.map((w, i) => startMiner(router.url, { name: `shard-${i + 1}`, keyFile: keyFile(w) })));
  await Promise.all(miners.map((m) => m.waitFor("ready")));
});

afterAll(async () => {
  await Promise.all(miners.map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

describe("a sharded pool (POOL_SHARDS = 4)", () => {
  it("counts and lists miners of every shard, serves one completion from three shards, keeps ledger and revoke on the miner's shard", async () => {
    // /status and /miners' stats come from the shards' summaries (pushed within a second of a connect).
    await until(async () => (await api(router, "/api/v1/status")).body.connected_miners === 3, 20_000);
    const info = await api(router, "/api/v1/info");
    expect(info.body.node_stats.total_count).toBe(3);

    // Pages of one: shard after shard, an opaque cursor, every miner once.
    const seen: string[] = [];
    let before = "";
    for (let i = 0; i < 10; i++) {
      const page = await api(router, `/api/v1/miners?limit=1${before ? `&before=${before}` : ""}`);
      expect(page.status).toBe(200);
      expect(page.body.stats).toMatchObject({ total: 3, online: 3 });
      seen.push(...page.body.nodes.map((n: { address: string }) => n.address));
      if (!page.body.next_before) break;
      before = page.body.next_before;
    }
    expect(seen).toEqual(addresses);

    const created = await api(router, "/api/v1/sessions", { body: { deposit: 1_000_000, redundancy: 3, max_miners: 3 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const sid = created.body.id as string;
    await until(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length === 3, 30_000);
    const done = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: "Shards", max_tokens: 4 } });
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    for (const m of done.body.miners as { address: string }[]) expect(addresses).toContain(m.address);
    // The task went to all three (the answer may close on a quorum before the third commits).
    const tasks = (await api(router, `/api/v1/tasks/${sid}`)).body.tasks as { replicas: { miner: string }[] }[];
    expect(tasks[0].replicas.map((r) => r.miner).sort()).toEqual([...addresses].sort());
    // The directory's catalog counts the session's miners over every shard.
    await until(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.miners_count === 3, 10_000);

    // Each replica's outcome reaches its miner's record on its own shard (outcomes travel in batches, split by
    // shard); the answer's miners were rewarded there.
    const rewarded = (done.body.miners as { address: string }[]).map((m) => m.address);
    for (const a of addresses) {
      const ledger = await until(async () => {
        const res = await api(router, `/api/v1/miners/${a}/ledger`);
        return res.body.reputation?.tasks >= 1 && res;
      }, 10_000);
      expect(ledger.body.address).toBe(a);
      const rewards = ledger.body.entries.filter((e: { kind: string }) => e.kind === "reward");
      expect(rewards.length > 0).toBe(rewarded.includes(a));
    }

    // A revoke on shard 3's miner: its session channel closes, its old token is refused, it registers again there.
    const reg = await registerRaw(router.url, { models: ["edge/tiny-gpt2"], account: wallets[2] });
    const asMiner = { key: null, headers: { authorization: `Bearer ${reg.token}` } };
    const revoked = await api(router, "/api/v1/miners/revoke", { ...asMiner, body: {} });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(revoked.body.sessions_closed).toBeGreaterThan(0);
    expect((await api(router, "/api/v1/miners/revoke", { ...asMiner, body: {} })).status).toBe(401);
    await until(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.includes(addresses[2]), 30_000);
    const again = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: "Again", max_tokens: 4 } });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    const listed = await api(router, "/api/v1/miners?limit=500");
    expect(listed.body.nodes.map((n: { address: string }) => n.address).sort()).toEqual([...addresses].sort());
  });
});
