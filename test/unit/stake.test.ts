import { runInDurableObject } from "cloudflare:test";
import { keccak256, stringToBytes } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import type { NodePool } from "../../durable-objects/node-pool.ts";
import { applyOutcomes, POOL_MIGRATIONS, type ReplicaOutcome, stakeAtRisk } from "../../durable-objects/reputation.ts";
import { migrate } from "../../durable-objects/session-schema.ts";
import { canonicalJson, evidenceDigest, pumpSlashes, recordStake } from "../../durable-objects/slash-submitter.ts";
import { api, challenge, createSession, env, errorOf, json, MinerSet, poolStub, uniq, waitFor } from "./helpers.ts";

// Stake from the chain and slashes on their way to it (durable-objects/chain-stake.ts, slash-submitter.ts). The
// unit pool has no chain: the rules are checked on a pool's own storage, and the refusals through the routes. The
// real chain is in test/integration/stake-chain.test.ts.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

const A = "0x00000000000000000000000000000000000000a1";

/** A fresh pool's storage with one miner whose stake was read from the chain (1000 at block 5). */
async function withChainMiner<T>(fn: (sql: SqlStorage) => T | Promise<T>): Promise<T> {
  const stub = env.NODE_POOL.get(env.NODE_POOL.idFromName(uniq("stake-pool")));
  return runInDurableObject(stub, async (_pool, state) => {
    const sql = state.storage.sql;
    migrate(sql, POOL_MIGRATIONS);
    sql.exec(
      `INSERT INTO miners (address, models, device, capacity, registered_at, stake, stake_source, stake_block, stake_checked_at)
       VALUES (?, '["m"]', 'cpu', 1, 1, 1000, 'chain', 5, 1)`,
      A,
    );
    return fn(sql);
  });
}

const rejected = (task: string, evidence?: ReplicaOutcome["evidence"]): ReplicaOutcome => ({
  miner: A,
  session_id: "s1",
  task_id: task,
  outcome: "rejected",
  reason: "commit does not match the precommitted hash",
  latency_ms: null,
  reward: 0,
  at: 1,
  block: 3,
  ...(evidence ? { evidence } : {}),
});

const row = (sql: SqlStorage) =>
  sql.exec<{ stake: number; unsettled: number; slashed: number }>(`SELECT stake, unsettled, slashed FROM miners`).one();

describe("slash accounting with a stake read from the chain", () => {
  it("a slash is pending with its evidence and lowers the stake at risk until the chain's figure reflects it", async () => {
    const out = await withChainMiner((sql) => {
      const proof = { fault: "commit", precommit_hash: "0x01", precommit_signature: "0x02", commit_text: "lie" };
      applyOutcomes(sql, [rejected("1", proof)], 0.1);
      const first = sql.exec(`SELECT status, amount, tx_hash, evidence FROM ledger`).one();
      const afterOne = stakeAtRisk(row(sql));
      applyOutcomes(sql, [rejected("2")], 0.1);
      const afterTwo = stakeAtRisk(row(sql));
      // The chain confirms slash 1 at block 7. A figure read at block 5 does not reflect it: still subtracted.
      sql.exec(`UPDATE ledger SET status = 'confirmed', chain_block = 7, tx_hash = '0xabc' WHERE task_id = '1'`);
      recordStake(sql, A, 1000, 5, 2);
      const staleRead = stakeAtRisk(row(sql));
      // Read again at block 7: the chain took 100, so only the unconfirmed 90 is still subtracted (no double count).
      recordStake(sql, A, 900, 7, 3);
      const freshRead = { atRisk: stakeAtRisk(row(sql)), ...row(sql) };
      return { first, afterOne, afterTwo, staleRead, freshRead };
    });
    expect(out.first).toMatchObject({ status: "pending", amount: 100, tx_hash: null });
    const evidence = JSON.parse(out.first.evidence as string);
    expect(evidence).toMatchObject({ kind: "slash", session_id: "s1", task_id: "1", miner: A, amount: 100 });
    expect(evidence.proof).toMatchObject({ fault: "commit", precommit_signature: "0x02", commit_text: "lie" });
    expect(out.afterOne).toBe(900);
    expect(out.afterTwo).toBe(810); // 10 % of what is still at risk
    expect(out.staleRead).toBe(810);
    expect(out.freshRead).toMatchObject({ atRisk: 810, stake: 900, unsettled: 90, slashed: 190 });
  });

  it("a declared stake's slashes stay local (nothing to send) and all of them count", async () => {
    const out = await withChainMiner((sql) => {
      sql.exec(`UPDATE miners SET stake_source = 'declared'`);
      applyOutcomes(sql, [rejected("1")], 0.5);
      return { status: sql.exec(`SELECT status FROM ledger`).one().status, atRisk: stakeAtRisk(row(sql)) };
    });
    expect(out).toEqual({ status: "local", atRisk: 500 });
  });

  it("a batch the chain cannot take stays pending with a backoff: written to R2 first, never marked submitted", async () => {
    const broken = { rpcUrl: "http://127.0.0.1:9", chainId: 31337, token: A as `0x${string}`, staking: A as `0x${string}` };
    const now = Date.now();
    const out = await withChainMiner(async (sql) => {
      applyOutcomes(sql, [rejected("1", { fault: "commit", commit_text: "x" })], 0.1);
      const pumped = await pumpSlashes(sql, env, broken, env.PAYLOADS, now);
      return {
        pumped,
        rows: sql.exec(`SELECT status, attempts, next_try_at, tx_hash, evidence_hash, evidence, last_error FROM ledger`).toArray(),
      };
    });
    expect(out.rows).toHaveLength(1);
    const r = out.rows[0] as Record<string, unknown>;
    expect(r).toMatchObject({ status: "pending", attempts: 1, tx_hash: null });
    expect(r.next_try_at as number).toBeGreaterThan(now);
    expect(String(r.last_error)).toMatch(/not sent/);
    expect(out.pumped.next).toBe(r.next_try_at);
    const stored = await env.PAYLOADS.get(`evidence/${r.evidence_hash}.json`);
    const text = await stored!.text();
    expect(keccak256(stringToBytes(text))).toBe(r.evidence_hash);
    expect(JSON.parse(text)).toEqual(JSON.parse(r.evidence as string));
  });
});

describe("evidence hashes", () => {
  it("cover canonical JSON: key order does not change the hash, any value does", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: null, y: "x" }], c: true } })).toBe('{"a":{"c":true,"d":[1,{"y":"x","z":null}]},"b":1}');
    const h = evidenceDigest({ miner: A, task_id: "1" }).hash;
    expect(evidenceDigest({ task_id: "1", miner: A }).hash).toBe(h);
    expect(evidenceDigest({ task_id: "2", miner: A }).hash).not.toBe(h);
    expect(h).toBe(keccak256(stringToBytes(`{"miner":"${A}","task_id":"1"}`)));
  });
});

/** Runs `fn` with the singleton pool's env changed (the unit pool is development without a chain). */
async function withPoolEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const stub = poolStub();
  let original: Env | undefined;
  await runInDurableObject(stub, (pool: NodePool) => {
    const holder = pool as unknown as { env: Env };
    original = holder.env;
    holder.env = { ...holder.env, ...vars } as Env;
  });
  try {
    return await fn();
  } finally {
    await runInDurableObject(stub, (pool: NodePool) => {
      (pool as unknown as { env: Env }).env = original!;
    });
  }
}

async function registerDeclared(stake: number): Promise<Response> {
  const me = privateKeyToAccount(generatePrivateKey());
  const ch = await challenge(me.address);
  const signature = await me.signMessage({ message: ch.message });
  const body = { address: me.address, nonce: ch.nonce, signature, models: ["m"], device: "cpu", capacity: 1, stake };
  return api("POST", "/miners/register", body, { key: null });
}

describe("where a registration's stake comes from", () => {
  it("outside development without a chain, a declared stake is refused and says how to fix it", async () => {
    const res = await withPoolEnv({ ROUTER_ENV: "production" }, () => registerDeclared(5000));
    expect(res.status).toBe(403);
    const err = await errorOf(res);
    expect(err.error.code).toBe("forbidden");
    expect(err.error.message).toMatch(/ROUTER_ENV=development/);
    expect(err.error.message).toMatch(/CHAIN_RPC_URL/);
  });

  it("with a chain that does not answer, registration is refused with 503 chain_unavailable, not trusted", async () => {
    const vars = { CHAIN_RPC_URL: "http://127.0.0.1:9", TOKEN_ADDRESS: A, STAKING_ADDRESS: A };
    const res = await withPoolEnv(vars, () => registerDeclared(5000));
    expect(res.status).toBe(503);
    const err = await errorOf(res);
    expect(err.error.code).toBe("chain_unavailable");
    expect(err.error.message).toMatch(/staking contract/);
  });

  it("in development without a chain the declared stake counts; its slashes stay local and survive re-registering", async () => {
    const model = uniq("model");
    const forger = await miners.start({ models: [model], behaviour: "bad_signature", stake: 1000 });
    const sid = await createSession({ model });
    await forger.join(sid);
    const pending = complete(sid);
    const a = await forger.nextAssign(sid);
    await waitFor(() => forger.messages(sid, a.task_id).some((m) => m.type === "cancel"), "cancel to the forger");
    const honest = await miners.start({ models: [model] });
    await honest.join(sid);
    expect((await pending).status).toBe(200);
    const entry = await waitFor(async () => {
      const res = await api("GET", `/miners/${forger.address}/ledger`);
      return (await json<{ entries: Record<string, unknown>[] }>(res)).entries.find((e) => e.kind === "slash");
    }, "the slash entry");
    expect(entry).toMatchObject({ kind: "slash", amount: 100, status: "local", tx_hash: null, evidence_hash: null });
    expect(entry).not.toHaveProperty("evidence");
    await forger.register(); // the same declared 1000 again
    const { nodes } = await json<{ nodes: { address: string; stake: number; stake_source: string }[] }>(await api("GET", "/miners"));
    expect(nodes.find((n) => n.address === forger.address)).toMatchObject({ stake: 900, stake_source: "declared" });
  });

  function complete(sid: string) {
    return api("POST", `/completions/${sid}`, { prompt: "sign here" });
  }
});

describe("GET /api/v1/chain and the faucet without a chain", () => {
  it("says the chain is off (declared stakes: development only) and the faucet answers 404 whatever the body", async () => {
    const res = await api("GET", "/chain", undefined, { key: null });
    expect(res.status).toBe(200);
    expect(await json(res)).toEqual({ enabled: false, min_stake: 100, declared_stake: true, faucet: false });
    for (const body of [{ address: A }, {}]) {
      const f = await api("POST", "/chain/faucet", body, { key: null });
      expect(f.status).toBe(404);
      expect((await errorOf(f)).error.message).toMatch(/ROUTER_ENV=development/);
    }
  });
});
