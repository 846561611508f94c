import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { routerIdentity } from "../../durable-objects/deployment.ts";
import { handoverProgress, homeOf, PoolHandover } from "../../durable-objects/pool-handover.ts";
import { shardIndexOf, shardName, shardOf } from "../../durable-objects/pool-shards.ts";
import { settleStake } from "../../durable-objects/reputation.ts";
import { poolShardsFrom } from "../../shared/pool-shard.ts";
import { env, ORIGIN, replicaOutcome as outcome, waitFor } from "./helpers.ts";

// The pool handover after POOL_SHARDS changed (durable-objects/pool-handover.ts). The unit pool runs with one
// shard and no POOL_SHARDS_FROM, so each test gives the objects it names ("pool", "pool-k") a handover that
// reads the layout under test (`layout` below): the objects, their SQLite and the RPC between them are real.
// An object evicted comes back with the pool's own env, so the tests set the layout again after an eviction.

const router = routerIdentity(env, ORIGIN);
const stub = (name: string) => env.NODE_POOL.get(env.NODE_POOL.idFromName(name));

const touched = new Set<string>();
afterEach(async () => {
  // Back to the pool's own env (no handover) for the next test.
  for (const name of touched) {
    await runInDurableObject(stub(name), (instance, state) => {
      Object.assign(instance, { handover: new PoolHandover(state, env) });
    });
  }
  touched.clear();
});

/** The objects named run their handover with POOL_SHARDS = to and POOL_SHARDS_FROM = from (null: unset). */
async function layout(to: number, from: number | null, ...names: string[]): Promise<void> {
  const over = { ...env, POOL_SHARDS: String(to), POOL_SHARDS_FROM: from === null ? "" : String(from) } as Env;
  for (const name of names) {
    touched.add(name);
    await runInDurableObject(stub(name), (instance, state) => {
      Object.assign(instance, { handover: new PoolHandover(state, over) });
    });
  }
}

/** A fresh wallet whose shard under `from` and under `to` satisfy `fit`. */
function account(accepts: (a: string) => boolean = () => true): PrivateKeyAccount {
  for (;;) {
    const a = privateKeyToAccount(generatePrivateKey());
    if (accepts(a.address.toLowerCase())) return a;
  }
}

async function register(name: string, acct: PrivateKeyAccount, stake = 1000) {
  const pool = stub(name);
  const ch = await pool.challenge(acct.address, router);
  const signature = await acct.signMessage({ message: ch.message });
  const req = { address: acct.address, nonce: ch.nonce, signature, models: ["m"], device: "cpu" as const, capacity: 1, stake };
  return pool.register(req, router);
}

async function registered(name: string, acct: PrivateKeyAccount) {
  const out = await register(name, acct);
  if (!out.ok) throw new Error(JSON.stringify(out.error));
  return out.claims;
}

const sql = <T>(name: string, query: string, ...args: SqlStorageValue[]) =>
  runInDurableObject(stub(name), (_, state) => state.storage.sql.exec(query, ...args).toArray() as T[]);

/**
 * What must cross unchanged: the miners row less its token epoch, live figures and the time its stake was last
 * read (each registration reads it again), every ledger row less its id, the faucet grants, the reputation.
 */
async function standing(name: string, address: string) {
  const a = address.toLowerCase();
  const [row] = await sql<Record<string, SqlStorageValue>>(name, `SELECT * FROM miners WHERE address = ?`, a);
  const ledger = await sql<Record<string, SqlStorageValue>>(name, `SELECT * FROM ledger WHERE miner = ? ORDER BY id`, a);
  const faucet = await sql<{ at: number }>(name, `SELECT at FROM faucet_grants WHERE address = ? ORDER BY at`, a);
  const { token_epoch, inflight, stake_checked_at, ...miner } = row ?? {};
  return {
    miner: row ? miner : null,
    ledger: ledger.map(({ id, ...rest }) => rest),
    faucet: faucet.map((f) => f.at),
    reputation: await stub(name).reputations([a]),
  };
}

/** A miner with history on `name`: rewards, an outlier, a local slash, a confirmed on-chain slash, a faucet grant. */
async function withHistory(name: string, acct: PrivateKeyAccount, extraLedger = 0) {
  const claims = await registered(name, acct);
  const a = claims.address;
  await stub(name).recordOutcomes([
    outcome(a, "agreed", 10, "1"),
    outcome(a, "agreed", 12, "2"),
    outcome(a, "outlier", 0, "3"),
    outcome(a, "rejected", 0, "4"),
  ]);
  await runInDurableObject(stub(name), (_, state) => {
    const db = state.storage.sql;
    db.exec(
      `INSERT INTO ledger (miner, session_id, task_id, owner, kind, amount, reason, at, block, status, tx_hash, chain_block)
       VALUES (?, 's', '5', 'dev', 'slash', 7, 'test', ?, 4, 'confirmed', '0xabc', 9)`,
      a,
      Date.now(),
    );
    db.exec(`UPDATE miners SET slashed = slashed + 7, slashes = slashes + 1 WHERE address = ?`, a);
    settleStake(db, a);
    for (let i = 0; i < extraLedger; i++) {
      db.exec(
        `INSERT INTO ledger (miner, session_id, task_id, owner, kind, amount, reason, at, block) VALUES (?, 's', ?, 'dev', 'reward', 1, 'r', ?, 5)`,
        a,
        `x${i}`,
        i,
      );
    }
    db.exec(`INSERT INTO faucet_grants (address, at) VALUES (?, ?)`, a, Date.now());
  });
  return claims;
}

describe("pool handover: POOL_SHARDS_FROM", () => {
  it("reads POOL_SHARDS_FROM like POOL_SHARDS; unset or empty is no handover", () => {
    expect(poolShardsFrom({})).toBeNull();
    expect(poolShardsFrom({ POOL_SHARDS_FROM: "" })).toBeNull();
    expect(poolShardsFrom({ POOL_SHARDS_FROM: "8" })).toBe(8);
    for (const bad of ["3", "0", "512", "x"]) expect(() => poolShardsFrom({ POOL_SHARDS_FROM: bad })).toThrow(/POOL_SHARDS_FROM must be/);
  });
});

describe("pool handover: a shard knows which it is", () => {
  it("from its id, not from a miner it holds (after a change it still holds other shards' miners)", () => {
    const eight = { ...env, POOL_SHARDS: "8" } as Env;
    for (let k = 0; k < 8; k++) expect(shardIndexOf(eight, stub(`pool-${k}`).id)).toBe(k);
    expect(shardIndexOf(eight, stub("pool").id)).toBeNull();
    expect(shardIndexOf(eight, stub("pool-8").id)).toBeNull();
    expect(shardIndexOf(env, stub("pool").id)).toBe(0);
  });
});

describe("pool handover: a miner's state follows it to its new shard", () => {
  it("1 → 4: reputation, stake, ledger and faucet grants come from 'pool' unchanged; 'pool' keeps nothing", async () => {
    const acct = account();
    const old = await withHistory("pool", acct);
    const a = old.address;
    const before = await standing("pool", a);
    expect(before.ledger.length).toBe(5);
    const home = homeOf(a, 4);
    expect(home).toBe(shardName(shardOf(a, 4), 4));
    await layout(4, 1, "pool", home);
    const left = (await stub("pool").handoverLeft()).left;
    expect(left).toBeGreaterThan(0);

    const claims = await registered(home, acct);
    expect(claims.epoch).toBeGreaterThan(old.epoch);
    const after = await standing(home, a);
    expect(after).toEqual(before);
    expect(after.reputation[a].score).toBeGreaterThan(0);
    // The old object holds none of it and no old token connects anywhere.
    expect(await standing("pool", a)).toEqual({ miner: null, ledger: [], faucet: [], reputation: {} });
    expect(await stub("pool").tokenCurrent(a, old.epoch)).toBe(false);
    expect(await stub(home).tokenCurrent(a, old.epoch)).toBe(false);
    expect(await stub(home).tokenCurrent(a, claims.epoch)).toBe(true);
    expect((await stub("pool").handoverLeft()).left).toBe(left - 1);
    // Registering again is an ordinary registration: nothing doubles.
    await registered(home, acct);
    expect((await standing(home, a)).ledger).toEqual(before.ledger);
  });

  it("4 → 8: a miner whose shard changes moves with its state; one that stays is left alone", async () => {
    const movers = account((a) => shardOf(a, 8) !== shardOf(a, 4));
    const stayer = account((a) => shardOf(a, 8) === shardOf(a, 4));
    const from = homeOf(movers.address.toLowerCase(), 4);
    const to = homeOf(movers.address.toLowerCase(), 8);
    expect(to).not.toBe(from);
    const old = await withHistory(from, movers);
    const before = await standing(from, old.address);
    const stayHome = homeOf(stayer.address.toLowerCase(), 4);
    const kept = await withHistory(stayHome, stayer);
    const keptBefore = await standing(stayHome, kept.address);
    await layout(8, 4, from, to, stayHome);

    await registered(to, movers);
    expect(await standing(to, old.address)).toEqual(before);
    expect((await standing(from, old.address)).miner).toBeNull();
    // The stayer's old and new shard are one object: no handover, its registration keeps everything.
    await registered(stayHome, stayer);
    expect(await standing(stayHome, kept.address)).toEqual(keptBefore);
  });

  it("4 → 8: outcomes reported to the new shard before the miner registers there bring its state first", async () => {
    const acct = account((a) => shardOf(a, 8) !== shardOf(a, 4));
    const from = homeOf(acct.address.toLowerCase(), 4);
    const to = homeOf(acct.address.toLowerCase(), 8);
    const old = await withHistory(from, acct);
    const [row] = await sql<{ tasks: number; rewards: number }>(from, `SELECT tasks, rewards FROM miners WHERE address = ?`, old.address);
    await layout(8, 4, from, to);
    await stub(to).recordOutcomes([outcome(old.address, "agreed", 5, "9")]);
    const [now] = await sql<{ tasks: number; rewards: number }>(to, `SELECT tasks, rewards FROM miners WHERE address = ?`, old.address);
    expect(now).toEqual({ tasks: row.tasks + 1, rewards: row.rewards + 5 });
    expect((await standing(from, old.address)).miner).toBeNull();
  });
});

describe("pool handover: crashes", () => {
  it("export, then both objects evicted, then a registration: nothing lost, nothing doubled, old tokens dead", async () => {
    const acct = account((a) => shardOf(a, 4) !== 0);
    const old = await withHistory("pool", acct, 1_200); // the ledger crosses in three pages
    const a = old.address;
    const before = await standing("pool", a);
    const home = homeOf(a, 4);
    await layout(4, 1, "pool", home);

    const first = await stub("pool").handoverExport(a, home, 0);
    expect(first.ok && first.state !== null && first.more).toBe(true);
    // Marked moved: the old object's tokens stop connecting, and it is no registration target any more.
    expect(await stub("pool").tokenCurrent(a, old.epoch)).toBe(false);
    const there = await register("pool", acct);
    expect(!there.ok && there.error.code).toBe("conflict");
    // A pull interrupted after some ledger pages left rows without a miners row on the new shard.
    await runInDurableObject(stub(home), (_, state) => {
      state.storage.sql.exec(
        `INSERT INTO ledger (miner, session_id, task_id, kind, amount, reason, at, block) VALUES (?, 's', 'orphan', 'reward', 1, 'r', 1, 1)`,
        a,
      );
    });
    await evictDurableObject(stub("pool"));
    await evictDurableObject(stub(home));
    await layout(4, 1, "pool", home);

    await registered(home, acct);
    const after = await standing(home, a);
    expect(after.ledger.length).toBe(before.ledger.length);
    expect(after).toEqual(before);
    expect((await standing("pool", a)).ledger).toEqual([]);
  });

  it("a confirm for a miner the new shard does not hold deletes nothing; confirm and export repeat safely", async () => {
    const acct = account((a) => shardOf(a, 4) !== 0);
    const old = await withHistory("pool", acct);
    const a = old.address;
    const before = await standing("pool", a);
    const home = homeOf(a, 4);
    await layout(4, 1, "pool", home);
    expect((await stub("pool").handoverExport(a, home, 0)).ok).toBe(true);
    expect(await stub("pool").handoverConfirm(a, home)).toBe(false);
    expect((await standing("pool", a)).ledger).toEqual(before.ledger);

    await registered(home, acct);
    expect(await stub("pool").handoverConfirm(a, home)).toBe(true);
    const again = await stub("pool").handoverExport(a, home, 0);
    expect(again).toEqual({ ok: true, state: null, ledger: [], more: false });
    expect((await standing(home, a)).ledger).toEqual(before.ledger);
  });

  it("a crash between import and confirm: the old copy goes at a later registration on the new shard", async () => {
    const acct = account((a) => shardOf(a, 4) !== 0);
    const a = (await withHistory("pool", acct)).address;
    const home = homeOf(a, 4);
    await layout(4, 1, "pool", home);
    await registered(home, acct);
    const moved = await standing(home, a);
    // What such a crash leaves: the old copy still there, marked moved and not done; the new shard's note unconfirmed.
    await sql("pool", `INSERT INTO miners (address, models, device, capacity, registered_at) VALUES (?, '["m"]', 'cpu', 1, 1)`, a);
    await sql("pool", `UPDATE handover_out SET done = 0 WHERE address = ?`, a);
    await sql(home, `UPDATE handover_in SET confirmed = 0, at = 0 WHERE address = ?`, a);
    expect((await stub("pool").handoverLeft()).unconfirmed).toBeGreaterThan(0);

    await registered(home, acct);
    await waitFor(async () => (await sql("pool", `SELECT 1 FROM miners WHERE address = ?`, a)).length === 0, "the old copy dropped");
    expect(await sql(home, `SELECT confirmed FROM handover_in WHERE address = ?`, a)).toEqual([{ confirmed: 1 }]);
    expect((await standing(home, a)).ledger).toEqual(moved.ledger);
  });

  it("waits for slashes on their way to the chain: the old shard keeps them until they settle", async () => {
    const acct = account((a) => shardOf(a, 4) !== 0);
    const old = await withHistory("pool", acct);
    const a = old.address;
    const home = homeOf(a, 4);
    await sql("pool", `UPDATE ledger SET status = 'submitted', tx_hash = '0xdef' WHERE miner = ? AND status = 'local'`, a);
    await layout(4, 1, "pool", home);
    const busy = await register(home, acct);
    expect(!busy.ok && busy.error).toMatchObject({ code: "conflict", details: { retry_after_s: 2 } });
    expect(await stub(home).reputations([a])).toEqual({});
    expect(await stub("pool").tokenCurrent(a, old.epoch)).toBe(true);

    await sql("pool", `UPDATE ledger SET status = 'confirmed', chain_block = 11 WHERE tx_hash = '0xdef'`);
    const before = await standing("pool", a);
    await registered(home, acct);
    expect(await standing(home, a)).toEqual(before);
  });
});

describe("pool handover: who may move a miner", () => {
  it("refuses an export for an address not of that shard under POOL_SHARDS_FROM, or to a shard not its own under POOL_SHARDS", async () => {
    const acct = account((a) => shardOf(a, 8) !== shardOf(a, 4));
    const a = acct.address.toLowerCase();
    const from = homeOf(a, 4);
    const to = homeOf(a, 8);
    const other = shardName((shardOf(a, 4) + 1) % 4, 4);
    const claims = await withHistory(from, acct);
    const before = await standing(from, a);
    await layout(8, 4, from, to, other);

    const wrongSource = await stub(other).handoverExport(a, to, 0);
    expect(!wrongSource.ok && wrongSource.error.code).toBe("forbidden");
    for (const target of [other, from, "pool", `${to}x`]) {
      const out = await stub(from).handoverExport(a, target, 0);
      expect(!out.ok && out.error.message).toMatch(/not the miner's shard under POOL_SHARDS=8/);
      expect(await stub(from).handoverConfirm(a, target)).toBe(false);
    }
    // Refused calls marked nothing: the miner's tokens still work at its old shard, its state is whole.
    expect(await standing(from, a)).toEqual(before);
    // A registration sent to an object that is not the miner's shard under POOL_SHARDS (an old router) is refused.
    const stale = await register(from, acct);
    expect(!stale.ok && stale.error.code).toBe("conflict");
    expect(await stub(from).tokenCurrent(a, claims.epoch)).toBe(true);

    // Without POOL_SHARDS_FROM there is no handover to ask for.
    await layout(8, null, from);
    const off = await stub(from).handoverExport(a, to, 0);
    expect(!off.ok && off.error.message).toMatch(/no pool handover is in progress/);
  });
});

describe("pool handover: the operator's count", () => {
  it("counts the miners each old shard still holds, down to none; only the admin secret reads it over HTTP", async () => {
    const accts = [account((a) => shardOf(a, 4) !== 0), account((a) => shardOf(a, 4) !== 0)];
    for (const acct of accts) await withHistory("pool", acct);
    await layout(4, 1, "pool", ...accts.map((acct) => homeOf(acct.address.toLowerCase(), 4)));
    const during = { ...env, POOL_SHARDS: "4", POOL_SHARDS_FROM: "1" } as Env;
    const start = await handoverProgress(during);
    expect(start).toMatchObject({ from: 1, to: 4, unconfirmed: 0 });
    expect(Object.keys(start?.shards ?? {})).toEqual(["pool"]);
    const left = start?.left ?? 0;
    expect(left).toBeGreaterThanOrEqual(2);
    for (const [i, acct] of accts.entries()) {
      await registered(homeOf(acct.address.toLowerCase(), 4), acct);
      expect((await handoverProgress(during))?.left).toBe(left - i - 1);
    }
    expect(await handoverProgress(env)).toBeNull();

    const router = (exports as unknown as { default: Fetcher }).default;
    const get = (bearer: string | null) =>
      router.fetch(`${ORIGIN}/admin/pool/handover`, { headers: bearer ? { Authorization: `Bearer ${bearer}` } : {} });
    expect((await get(env.ADMIN_SECRET)).status).toBe(200);
    expect(await (await get(env.ADMIN_SECRET)).json()).toEqual({ handover: null });
    for (const bearer of [null, "dev-key"]) expect((await get(bearer)).status).toBe(401);
  });
});
