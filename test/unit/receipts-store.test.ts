import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { RECEIPT_FLUSH_AT, RECEIPT_FLUSH_MS, type ReceiptRow, type ReceiptStore } from "../../durable-objects/receipt-store.ts";
import { usageMeter } from "../../durable-objects/stubs.ts";
import type { UsageEvent, UsageMeter } from "../../durable-objects/usage-meter.ts";
import { receiptKey } from "../../workers/lib/receipts.ts";
import { meterUsage, storeReceiptBatched } from "../../workers/lib/usage-batch.ts";
import { callApp, countingMeters } from "./app-calls.ts";
import { createSession, env, json, MinerSet, uniq, waitFor } from "./helpers.ts";

// Receipts kept by their owner's UsageMeter (durable-objects/receipt-store.ts): stored in the usage batches (one RPC
// for many), served while pending, moved by the alarm into one R2 object per batch and still served from there, kept
// pending while R2 fails, pruned past retention (rows and objects), readable through the route by their owner only,
// and a meter still takes the one-argument recordMany of the release before.

const DAY = 86_400_000;

function row(issuedAt = Date.now(), extra: Record<string, unknown> = {}): ReceiptRow {
  const request_id = crypto.randomUUID();
  return { request_id, issued_at: issuedAt, body: JSON.stringify({ request_id, issued_at: issuedAt, kind: "completion", ...extra }) };
}

const event = (i: number): UsageEvent => ({
  key_id: "k",
  model: "edge/tiny-gpt2",
  at: Date.now(),
  prompt_tokens: i,
  completion_tokens: i,
  cost: i,
  latency_ms: 1,
  failed: false,
  request: true,
});

/** The meter's receipt table and batch objects, as SQLite holds them. */
function tables(owner: string) {
  return runInDurableObject(usageMeter(env, owner), (_m: UsageMeter, state) => ({
    rows: state.storage.sql
      .exec<{ request_id: string; pending: number; batch: number | null }>(
        `SELECT request_id, body IS NOT NULL AS pending, batch FROM receipt ORDER BY issued_at`,
      )
      .toArray(),
    batches: state.storage.sql.exec<{ id: number; key: string; newest: number }>(`SELECT * FROM receipt_batch`).toArray(),
  }));
}

async function objectsOf(owner: string): Promise<string[]> {
  const prefix = `receipts/batches/${env.USAGE_METER.idFromName(owner).toString()}/`;
  return (await env.PAYLOADS.list({ prefix })).objects.map((o) => o.key);
}

describe("receipts in the owner's UsageMeter", () => {
  it("a pending receipt is served; the alarm moves the pending ones into exactly one R2 object, served from there", async () => {
    const owner = uniq("rs-owner");
    const meter = usageMeter(env, owner);
    const rows = [row(Date.now() - 2), row(Date.now() - 1), row()];
    const before = Date.now();
    await Promise.all(rows.map((r) => storeReceiptBatched(env, owner, r)));
    for (const r of rows) expect(await meter.receipt(r.request_id)).toBe(r.body);
    // Fewer than RECEIPT_FLUSH_AT pending: the alarm waits up to RECEIPT_FLUSH_MS for more.
    const alarm = await runInDurableObject(meter, (_m: UsageMeter, state) => state.storage.getAlarm());
    expect(alarm).toBeGreaterThanOrEqual(before + RECEIPT_FLUSH_MS);
    expect(alarm).toBeLessThanOrEqual(Date.now() + RECEIPT_FLUSH_MS);
    expect(await objectsOf(owner)).toEqual([]);

    expect(await runDurableObjectAlarm(meter)).toBe(true);
    const objects = await objectsOf(owner);
    expect(objects).toHaveLength(1);
    expect(objects[0]).toMatch(new RegExp(`/${rows[0].issued_at}-[0-9a-f]{8}\\.ndjson$`));
    const text = await (await env.PAYLOADS.get(objects[0]))!.text();
    expect(text).toBe(rows.map((r) => `${r.body}\n`).join(""));
    const { rows: stored, batches } = await tables(owner);
    expect(stored.map((r) => r.pending)).toEqual([0, 0, 0]);
    expect(batches).toEqual([{ id: stored[0].batch, key: objects[0], newest: rows[2].issued_at }]);
    for (const r of rows) expect(await meter.receipt(r.request_id)).toBe(r.body);
    expect(await meter.receipt(crypto.randomUUID())).toBeNull();
  });

  it("RECEIPT_FLUSH_AT pending receipts make the alarm run at once", async () => {
    const owner = uniq("rs-many");
    await Promise.all(Array.from({ length: RECEIPT_FLUSH_AT }, () => storeReceiptBatched(env, owner, row())));
    // Not run by the test: the alarm, due now, runs by itself well before RECEIPT_FLUSH_MS.
    const objects = await waitFor(
      async () => {
        const keys = await objectsOf(owner);
        return keys.length > 0 && keys;
      },
      "the pending receipts to be moved",
      RECEIPT_FLUSH_MS / 2,
    );
    expect(objects).toHaveLength(1);
    expect((await tables(owner)).rows.filter((r) => r.pending)).toEqual([]);
  });

  it("a failed put leaves the receipts pending and served, and a later alarm moves them", async () => {
    const owner = uniq("rs-fail");
    const meter = usageMeter(env, owner);
    const rows = [row(), row()];
    await Promise.all(rows.map((r) => storeReceiptBatched(env, owner, r)));
    const next = await runInDurableObject(meter, async (m: UsageMeter, state) => {
      const store = (m as unknown as { receipts: ReceiptStore }).receipts;
      const real = store.env;
      const failing = { ...real.PAYLOADS, put: () => Promise.reject(new Error("R2 down")) } as unknown as R2Bucket;
      store.env = { ...real, PAYLOADS: failing };
      try {
        await m.alarm();
      } finally {
        store.env = real;
      }
      return state.storage.getAlarm();
    });
    expect(next).toBeGreaterThan(Date.now()); // retried after RECEIPT_FLUSH_MS
    expect(await tables(owner)).toEqual({ rows: rows.map((r) => ({ request_id: r.request_id, pending: 1, batch: null })), batches: [] });
    expect(await objectsOf(owner)).toEqual([]);
    for (const r of rows) expect(await meter.receipt(r.request_id)).toBe(r.body);

    expect(await runDurableObjectAlarm(meter)).toBe(true);
    expect(await objectsOf(owner)).toHaveLength(1);
    expect((await tables(owner)).rows.map((r) => r.pending)).toEqual([0, 0]);
    for (const r of rows) expect(await meter.receipt(r.request_id)).toBe(r.body);
  });

  it("a receipt stored again while its batch is being put (its paid version) stays pending, never lost", async () => {
    const owner = uniq("rs-race");
    const meter = usageMeter(env, owner);
    const [a, b] = [row(), row()];
    await Promise.all([storeReceiptBatched(env, owner, a), storeReceiptBatched(env, owner, b)]);
    const paid = { ...b, body: JSON.stringify({ ...JSON.parse(b.body), payment: { amount: "1" } }) };
    await runInDurableObject(meter, async (m: UsageMeter) => {
      const store = (m as unknown as { receipts: ReceiptStore }).receipts;
      const real = store.env;
      const racing = {
        ...real.PAYLOADS,
        put: async (...args: Parameters<R2Bucket["put"]>) => {
          await m.recordMany([], [paid]);
          return real.PAYLOADS.put(...args);
        },
      } as unknown as R2Bucket;
      store.env = { ...real, PAYLOADS: racing };
      try {
        await m.alarm();
      } finally {
        store.env = real;
      }
    });
    const { rows } = await tables(owner);
    expect(rows.find((r) => r.request_id === a.request_id)?.pending).toBe(0);
    expect(rows.find((r) => r.request_id === b.request_id)?.pending).toBe(1);
    expect(await meter.receipt(b.request_id)).toBe(paid.body);
    expect(await meter.receipt(a.request_id)).toBe(a.body);
  });

  it("retention: an old receipt reads as absent and its row goes; rows and objects past it are pruned", async () => {
    const owner = uniq("rs-old");
    const meter = usageMeter(env, owner);
    const old = row(Date.now() - 8 * DAY);
    await meter.recordMany([], [old]);
    expect(await meter.receipt(old.request_id)).toBeNull();
    expect((await tables(owner)).rows).toEqual([]);

    const rows = [row(), row()];
    await meter.recordMany([], rows);
    expect(await runDurableObjectAlarm(meter)).toBe(true);
    const [key] = await objectsOf(owner);
    expect(key).toBeDefined();
    // A week later (as the meter sees it): every row and the object are past retention.
    await runInDurableObject(meter, (_m: UsageMeter, state) => {
      state.storage.sql.exec(`UPDATE receipt SET issued_at = issued_at - ?`, 8 * DAY);
      state.storage.sql.exec(`UPDATE receipt_batch SET newest = newest - ?`, 8 * DAY);
    });
    expect(await runDurableObjectAlarm(meter)).toBe(true);
    expect(await tables(owner)).toEqual({ rows: [], batches: [] });
    expect(await env.PAYLOADS.head(key)).toBeNull();
    expect(await runInDurableObject(meter, (_m: UsageMeter, state) => state.storage.getAlarm())).toBeNull();
    for (const r of rows) expect(await meter.receipt(r.request_id)).toBeNull();
  });

  it("recordMany(events) of the release before still records usage", async () => {
    const owner = uniq("rs-old-caller");
    const meter = usageMeter(env, owner);
    expect(await meter.recordMany([event(3), event(4)])).toBe(0);
    const rows = await meter.query({ bucket: "minute", from: Date.now() - 3_600_000, to: Date.now() + 60_000 });
    expect(rows.reduce((n, r) => n + r.requests, 0)).toBe(2);
    expect(rows.reduce((n, r) => n + r.prompt_tokens, 0)).toBe(7);
    expect((await tables(owner)).rows).toEqual([]);
  });
});

describe("receipts batched with usage (workers/lib/usage-batch.ts)", () => {
  it("concurrent receipts and events of one owner are one RPC, and every one lands", async () => {
    const owner = uniq("rs-batch");
    const counted = countingMeters();
    const rows = Array.from({ length: 30 }, () => row());
    await Promise.all([
      ...rows.map((r) => storeReceiptBatched(counted.env, owner, r)),
      ...rows.map((_, i) => meterUsage(counted.env, owner, [event(i)])),
    ]);
    expect(counted.batches()).toBe(1);
    expect((await tables(owner)).rows.map((r) => r.request_id).sort()).toEqual(rows.map((r) => r.request_id).sort());
    const usage = await usageMeter(env, owner).query({ bucket: "minute", from: Date.now() - 3_600_000, to: Date.now() + 60_000 });
    expect(usage.reduce((n, r) => n + r.requests, 0)).toBe(30);
  });

  it("a full batch (64 receipts) is sent at once, the rest in the next", async () => {
    const owner = uniq("rs-full");
    const counted = countingMeters();
    await Promise.all(Array.from({ length: 100 }, () => storeReceiptBatched(counted.env, owner, row())));
    expect(counted.batches()).toBe(2);
    expect((await tables(owner)).rows).toHaveLength(100);
  });

  it("a meter that stores no receipts (the release before) is reported to the receipt, not to the usage", async () => {
    const owner = uniq("rs-old-meter");
    const counted = countingMeters((real) => ({ recordMany: (events: UsageEvent[]) => real.recordMany(events).then(() => undefined) }));
    const [receipt, usage] = await Promise.allSettled([
      storeReceiptBatched(counted.env, owner, row()),
      meterUsage(counted.env, owner, [event(1)]),
    ]);
    expect(receipt.status).toBe("rejected");
    expect(usage.status).toBe("fulfilled");
  });
});

// ── through the router ─────────────────────────────────────────────────────────────────────────────────────

const BOB_KEY = "bob-key-0123456789";
const miners = new MinerSet();
afterEach(() => miners.closeAll());

/** The unit env with a second tenant `bob` (and optionally another UsageMeter namespace). */
const varsOf = (over: Partial<Env> = {}) => ({ ...env, API_KEYS: `dev:dev-key,bob:${BOB_KEY}`, ...over }) as Env;

describe("GET /api/v1/receipts/:requestId", () => {
  it("serves the owner's receipt, pending or moved, and to another owner it does not exist", async () => {
    const vars = varsOf();
    const mine = row();
    const bobs = row();
    await Promise.all([storeReceiptBatched(env, "dev", mine), storeReceiptBatched(env, "bob", bobs)]);
    // Another owner's legacy key is not asked either.
    const legacy = row();
    await env.PAYLOADS.put(receiptKey("bob", legacy.request_id), legacy.body, { customMetadata: { issued_at: String(legacy.issued_at) } });
    for (const moved of [false, true]) {
      if (moved) await Promise.all(["dev", "bob"].map((o) => runDurableObjectAlarm(usageMeter(env, o))));
      const res = await callApp(vars, "GET", `/api/v1/receipts/${mine.request_id.toUpperCase()}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/json");
      expect(await res.text()).toBe(mine.body);
      expect((await callApp(vars, "GET", `/api/v1/receipts/${bobs.request_id}`, undefined, BOB_KEY)).status).toBe(200);
      for (const id of [bobs.request_id, legacy.request_id]) {
        const res = await callApp(vars, "GET", `/api/v1/receipts/${id}`);
        expect(res.status).toBe(404);
        expect((await json(res)).error.code).toBe("not_found");
      }
      expect((await callApp(vars, "GET", `/api/v1/receipts/${mine.request_id}`, undefined, BOB_KEY)).status).toBe(404);
    }
    expect((await callApp(vars, "GET", `/api/v1/receipts/${legacy.request_id}`, undefined, BOB_KEY)).status).toBe(200);
  });

  it("an answer's receipt whose batch failed is stored alone under the legacy key, and served", async () => {
    const model = uniq("rs-model");
    const miner = await miners.start({ models: [model], text: () => "words", usage: () => ({ prompt_tokens: 4, completion_tokens: 2 }) });
    const sid = await createSession({ model });
    await miner.join(sid);
    const ns = env.USAGE_METER;
    const USAGE_METER = {
      idFromName: (name: string) => ns.idFromName(name),
      get: (id: DurableObjectId) => {
        const real = ns.get(id);
        return {
          recordMany: () => Promise.reject(new Error("meter down")),
          receipt: (requestId: string) => real.receipt(requestId),
        };
      },
    } as unknown as Env["USAGE_METER"];
    const vars = varsOf({ USAGE_METER });
    const res = await callApp(vars, "POST", `/api/v1/completions/${sid}`, { prompt: "hi", max_tokens: 4 });
    expect(res.status).toBe(200);
    const { receipt } = await json(res);
    expect(await env.PAYLOADS.head(receiptKey("dev", receipt.request_id))).not.toBeNull();
    const again = await callApp(vars, "GET", `/api/v1/receipts/${receipt.request_id}`);
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual(receipt);
  });
});
