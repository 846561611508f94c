import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { registrationMessage } from "../../shared/signing.ts";
import { api, challenge, createSession, env, errorOf, json, MinerSet, ORIGIN, poolStub, TestMiner, uniq, waitFor } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

interface MinerNode {
  address: string;
  status: "online" | "offline";
  models: string[];
  capacity: number;
  device: string;
  name: string | null;
  sessions: string[];
}

async function listMiners(): Promise<{ nodes: MinerNode[]; stats: Record<string, unknown> }> {
  const res = await api("GET", "/miners");
  expect(res.status).toBe(200);
  return json(res);
}

const node = async (address: string) => (await listMiners()).nodes.find((n) => n.address === address);

function registerBody(address: string, nonce: string, signature: string, models = ["m"]) {
  return { address, nonce, signature, models, device: "cpu", capacity: 2, stake: 1000 };
}

describe("NodePool: registration", () => {
  it("refuses a registration signed by another key (401)", async () => {
    const me = privateKeyToAccount(generatePrivateKey());
    const other = privateKeyToAccount(generatePrivateKey());
    const ch = await challenge(me.address);
    const signature = await other.signMessage({ message: ch.message });
    const res = await api("POST", "/miners/register", registerBody(me.address, ch.nonce, signature), { key: null });
    expect(res.status).toBe(401);
    expect((await errorOf(res)).error.code).toBe("unauthorized");
    expect(await node(me.address.toLowerCase())).toBeUndefined();
  });

  it("refuses a reused nonce, and a nonce issued to another address", async () => {
    const me = privateKeyToAccount(generatePrivateKey());
    const ch = await challenge(me.address);
    const signature = await me.signMessage({ message: ch.message });
    const first = await api("POST", "/miners/register", registerBody(me.address, ch.nonce, signature), { key: null });
    expect(first.status).toBe(200);
    const reg = await json(first);
    expect(reg.address).toBe(me.address.toLowerCase());
    expect(reg.token).toBeTruthy();

    const again = await api("POST", "/miners/register", registerBody(me.address, ch.nonce, signature), { key: null });
    expect(again.status).toBe(401);
    expect((await errorOf(again)).error.code).toBe("unauthorized");

    // A nonce challenged for one address cannot register another, even correctly signed by that other key.
    const thief = privateKeyToAccount(generatePrivateKey());
    const ch2 = await challenge(me.address);
    const stolen = await thief.signMessage({ message: registrationMessage(thief.address, ch2.nonce, ch2.router) });
    const res = await api("POST", "/miners/register", registerBody(thief.address, ch2.nonce, stolen), { key: null });
    expect(res.status).toBe(401);
  });

  it("the challenge message is the one the miner signs, and it names this deployment", async () => {
    const me = privateKeyToAccount(generatePrivateKey());
    const ch = await challenge(me.address);
    expect(ch.message).toContain(me.address.toLowerCase());
    expect(ch.message).toContain(ch.nonce);
    expect(ch.router).toEqual({ name: env.ROUTER_NAME, chain_id: Number(env.CHAIN_ID), address: null, origin: ORIGIN });
    expect(ch.message).toBe(registrationMessage(me.address, ch.nonce, ch.router));
    expect(ch.message).toContain(`origin: ${ORIGIN}`);
    expect(ch.expires_at).toBeGreaterThan(Date.now());
    const bad = await api("POST", "/miners/challenge", { address: "0x123" }, { key: null });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).error.code).toBe("invalid_request");
  });
});

describe("NodePool: presence and session assignment", () => {
  it("lists a connected miner online with its models and capacity, and offline once its pool socket closes", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model, "extra/model"], capacity: 3, name: "unit-miner", device: "webgpu" });
    const n = await node(m.address);
    expect(n).toMatchObject({ status: "online", models: [model, "extra/model"], capacity: 3, device: "webgpu", name: "unit-miner" });
    const list = await listMiners();
    expect(list.stats.online as number).toBeGreaterThanOrEqual(1);
    expect(m.poolMessages[0]).toMatchObject({ type: "registered", address: m.address });

    m.closePool();
    await waitFor(async () => (await node(m.address))?.status === "offline", "the miner to show offline");
  });

  it("a miner whose heartbeats stopped (socket still open) leaves the pool at the stale check", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model] });
    const sid = await createSession({ model });
    await waitFor(async () => (await node(m.address))?.sessions.includes(sid), "the miner to be assigned");
    // Its last heartbeat was long ago: more than three heartbeat intervals (liveness is kept in memory,
    // durable-objects/pool-liveness.ts), and the pool did not just wake up.
    await runInDurableObject(poolStub(), (pool) => {
      const live = (pool as unknown as { live: { seen: Map<string, number>; wokeAt: number } }).live;
      live.seen.set(m.address, Date.now() - 60_000);
      live.wokeAt = 0;
    });
    expect(await runDurableObjectAlarm(poolStub())).toBe(true);
    const n = await node(m.address);
    expect(n?.status).toBe("offline");
    expect(n?.sessions).toEqual([]);
  });

  it("a registered miner that never connects is listed offline", async () => {
    const m = new TestMiner({ models: [uniq("model")] });
    await m.register();
    expect((await node(m.address))?.status).toBe("offline");
  });

  it("tells miners which sessions to serve: new sessions for their model, never another model's", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model] });
    const other = await miners.start({ models: [uniq("model")] });
    const sid = await createSession({ model });
    await waitFor(() => m.poolSessions().includes(sid), "the session pushed to the miner");
    expect(other.poolSessions()).not.toContain(sid);
    expect((await node(m.address))?.sessions).toContain(sid);
    const res = await api("GET", `/sessions/${sid}`);
    expect((await json(res)).miners_count).toBe(1);
  });

  it("a miner for another model may not join a session (403)", async () => {
    const model = uniq("model");
    const stranger = await miners.start({ models: [uniq("model")] });
    const sid = await createSession({ model });
    await expect(stranger.join(sid, { waitForPool: false })).rejects.toThrow(/403/);
  });

  it("max_miners caps how many miners a session gets", async () => {
    const model = uniq("model");
    const ms = [await miners.start({ models: [model] }), await miners.start({ models: [model] }), await miners.start({ models: [model] })];
    const sid = await createSession({ model, max_miners: 2 });
    await waitFor(() => ms.filter((m) => m.poolSessions().includes(sid)).length === 2, "two miners assigned");
    // When one leaves, the third takes its place.
    const serving = ms.filter((m) => m.poolSessions().includes(sid));
    const spare = ms.find((m) => !serving.includes(m))!;
    serving[0].closePool();
    await waitFor(() => spare.poolSessions().includes(sid), "the spare miner to take over");
  });
});
