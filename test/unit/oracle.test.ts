import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, complete, createSession, getTask, json, MinerSet, oracleStub, sleep, uniq } from "./helpers.ts";

async function status() {
  const res = await api("GET", "/status");
  expect(res.status).toBe(200);
  return json<{ block_height: number; block_interval_ms: number; block_at: number; uptime: number }>(res);
}

describe("Oracle: network time as blocks", () => {
  it("uses the configured block interval (BLOCK_INTERVAL_MS=200 in the unit project)", async () => {
    expect((await status()).block_interval_ms).toBe(200);
  });

  it("block height advances as time passes", async () => {
    const first = await status();
    await sleep(650);
    const second = await status();
    expect(second.block_height).toBeGreaterThanOrEqual(first.block_height + 2);
    expect(second.block_at).toBeGreaterThan(first.block_at);
  });

  it("its alarm produces blocks and re-arms itself", async () => {
    const stub = oracleStub();
    const before = (await stub.snapshot()).height;
    await sleep(450);
    // The alarm is always armed for the next block; running it records the block that is due.
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const stored = await runInDurableObject(
      stub,
      (_o, state) => state.storage.sql.exec<{ height: number }>(`SELECT MAX(height) AS height FROM blocks`).one().height,
    );
    expect(stored).toBeGreaterThanOrEqual(before + 2);
    expect(await runInDurableObject(stub, (_o, state) => state.storage.getAlarm())).not.toBeNull();
    expect((await status()).block_height).toBeGreaterThanOrEqual(stored);
  });

  it("recent blocks are consecutive heights at the block interval", async () => {
    await sleep(500);
    const recent = await oracleStub().recent(3);
    expect(recent.length).toBeGreaterThanOrEqual(2);
    expect(recent[0].height).toBeGreaterThan(recent[1].height);
    expect(recent[0].at - recent[1].at).toBe((recent[0].height - recent[1].height) * 200);
  });

  it("tasks are stamped with oracle heights", async () => {
    const miners = new MinerSet();
    try {
      const model = uniq("model");
      const m = await miners.start({ models: [model], delayMs: 250 });
      const sid = await createSession({ model });
      await m.join(sid);
      const h0 = (await status()).block_height;
      const res = await complete(sid, { prompt: "when?" });
      const body = await json(res);
      const h1 = (await status()).block_height;
      const task = await getTask(sid, body.task_id);
      expect(task.created_block).toBeGreaterThanOrEqual(h0);
      expect(task.finished_block!).toBeGreaterThan(task.created_block);
      expect(task.finished_block!).toBeLessThanOrEqual(h1);
      expect(task.deadline_block).toBeGreaterThan(task.created_block);
    } finally {
      await miners.closeAll();
    }
  });
});
