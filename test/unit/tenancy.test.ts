import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { SessionSummary } from "../../durable-objects/node-pool.ts";
import type { LedgerEntry } from "../../durable-objects/reputation.ts";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { seesSession, seesTask } from "../../durable-objects/tenancy.ts";
import app from "../../workers/index.ts";
import { apiKeyOwner } from "../../workers/lib/credentials.ts";
import { CreateSessionBody } from "../../workers/lib/schemas.ts";
import { ledgerSeenBy, reservedBy, sessionsSeenBy } from "../../workers/lib/tenancy.ts";
import { API_KEY, createSession, env, errorOf, MinerSet, ORIGIN, poolStub, sessionStub, uniq } from "./helpers.ts";

// The ownership rule (durable-objects/tenancy.ts) as a pure rule, as the SessionQueue applies it to what it holds
// and as the router applies it to the pool's catalog, miner list and ledger. The attacks on it with two real
// tenants are in test/integration/attacks-tenancy.test.ts.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("the rule", () => {
  it("an owned session is its owner's alone; a shared session's tasks each their submitter's", () => {
    expect(seesSession({ owner: "alice" }, "alice")).toBe(true);
    expect(seesSession({ owner: "alice" }, "bob")).toBe(false);
    expect(seesSession({ owner: "*" }, "bob")).toBe(true);
    expect(seesTask({ owner: "alice" }, "alice", "alice")).toBe(true);
    expect(seesTask({ owner: "alice" }, "alice", "bob")).toBe(false);
    expect(seesTask({ owner: "*" }, "alice", "alice")).toBe(true);
    expect(seesTask({ owner: "*" }, "alice", "bob")).toBe(false);
    // A shared task stored before submitters were recorded is nobody's.
    expect(seesTask({ owner: "*" }, null, "alice")).toBe(false);
  });

  it("no API key may be named `*`, the shared sessions' owner", () => {
    const keys = { ...env, API_KEYS: "*:star-key-0123456789,alice:alice-key-0123456789" };
    expect(apiKeyOwner(keys, "star-key-0123456789")).toBeUndefined();
    expect(apiKeyOwner(keys, "alice-key-0123456789")).toBe("alice");
  });

  it("reserves every configured shared session id, naming its var", () => {
    const vars = {
      ...env,
      DEFAULT_SESSION_ID: "default",
      DELEGATE_SESSION_POOL: "d-1, d-2",
      VALIDATE_SESSION_POOL: "v-1",
      FACTCHECK_STANDARD_SESSION: "fc-s",
      FACTCHECK_REALTIME_SESSION: "",
    };
    expect(reservedBy(vars, "default")).toBe("DEFAULT_SESSION_ID");
    expect(reservedBy(vars, "d-2")).toBe("DELEGATE_SESSION_POOL");
    expect(reservedBy(vars, "v-1")).toBe("VALIDATE_SESSION_POOL");
    expect(reservedBy(vars, "fc-s")).toBe("FACTCHECK_STANDARD_SESSION");
    expect(reservedBy(vars, "mine")).toBeUndefined();
    expect(reservedBy(vars, "")).toBeUndefined();
  });

  it("shows the catalog, miners' sessions and ledger ids a caller may see, and never an owner", () => {
    const summary = (id: string, owner: string) => ({ id, owner }) as SessionSummary;
    const sessions = [summary("a1", "alice"), summary("b1", "bob"), summary("default", "*")];
    expect(sessionsSeenBy(sessions, "bob").map((s) => s.id)).toEqual(["b1", "default"]);
    // Miners' sessions are filtered the same way in the pool (durable-objects/pool-miners.ts; test/unit/review-fixes.test.ts).
    const entry = (id: number, session_id: string, task_id: string, owner: string | null) =>
      ({ id, miner: "0x1", session_id, task_id, owner, kind: "reward", amount: 5, reason: "in consensus", at: 1, block: 1 }) as LedgerEntry;
    const seen = ledgerSeenBy([entry(1, "a1", "7", "alice"), entry(2, "default", "8", "bob"), entry(3, "default", "9", null)], "bob");
    expect(seen.map((e) => [e.session_id, e.task_id, e.amount])).toEqual([
      [null, null, 5],
      ["default", "8", 5],
      [null, null, 5],
    ]);
    expect(seen.every((e) => !("owner" in e))).toBe(true);
  });

  it("bounds session metadata: 32 keys, 4 KiB of JSON, keys of 64 characters", () => {
    const body = (metadata: Record<string, unknown>) => CreateSessionBody.safeParse({ deposit: 1, metadata });
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    expect(body(keys(32)).success).toBe(true);
    expect(body(keys(33)).success).toBe(false);
    expect(body({ a: "x".repeat(1000), b: "x".repeat(1000), c: "x".repeat(1000), d: "x".repeat(1000) }).success).toBe(true);
    expect(body({ a: "x".repeat(1000), b: "x".repeat(1000), c: "x".repeat(1000), d: "x".repeat(1000), e: "x".repeat(100) }).success).toBe(
      false,
    );
    expect(body({ ["k".repeat(65)]: 1 }).success).toBe(false);
  });
});

const request = (owner: string, prompt: string): SubmitRequest => ({
  input: { prompt, prompt_type: 0 },
  params: { max_tokens: 4, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [] },
  stream: false,
  owner,
});

describe("the SessionQueue's reads", () => {
  it("an owned session reads as unknown to another owner", async () => {
    const model = uniq("model");
    const sid = await createSession({ model });
    await (await miners.start({ models: [model] })).join(sid);
    const done = await sessionStub(sid).submit(request("dev", "mine"));
    if (!done.ok || done.stream) throw new Error(`submit: ${JSON.stringify(done)}`);
    const tid = done.task.task_id;
    const queue = sessionStub(sid);
    expect(await queue.describe("intruder")).toBeNull();
    expect(await queue.listTasks("intruder")).toBeNull();
    expect(await queue.getTask(tid, "intruder")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.access("intruder", tid)).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.submit(request("intruder", "yours?"))).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.getTask(tid, "dev")).toMatchObject({ ok: true, task: { task_id: tid, input: { prompt: "mine" } } });
    expect((await queue.listTasks("dev"))!.map((t) => t.task_id)).toEqual([tid]);
  });

  it("on a shared session each owner lists, reads and counts its own tasks only", async () => {
    const model = uniq("model");
    const sid = uniq("shared");
    const config = { ...(await sessionStub(await createSession({ model })).describe())!.config, id: sid, owner: "*", deposit: 1_000_000 };
    expect((await sessionStub(sid).init(config)).ok).toBe(true);
    await poolStub().addSession(config);
    await (await miners.start({ models: [model] })).join(sid);
    const queue = sessionStub(sid);
    const alice = await queue.submit(request("alice", "alice's prompt"));
    const bob = await queue.submit(request("bob", "bob's prompt"));
    if (!alice.ok || alice.stream || !bob.ok || bob.stream) throw new Error("submit failed");
    const [a, b] = [alice.task.task_id, bob.task.task_id];
    expect((await queue.listTasks("bob"))!.map((t) => t.task_id)).toEqual([b]);
    expect((await queue.listTasks("alice"))!.map((t) => t.task_id)).toEqual([a]);
    expect(await queue.getTask(a, "bob")).toMatchObject({ ok: false, error: { code: "task_not_found" } });
    expect(await queue.access("bob", a)).toMatchObject({ ok: false, error: { code: "task_not_found" } });
    expect(await queue.access("bob", b)).toMatchObject({ ok: true });
    const usage = (await queue.describe("bob"))!.usage;
    expect(usage).toMatchObject({ tasks_total: 1, tasks_open: 0, used: bob.task.result!.usage.total_tokens, deposit: 1_000_000 });
    // The router's own view (no caller) counts everything.
    expect((await queue.describe())!.usage.tasks_total).toBe(2);
  });

  it("a configured id a key claimed before it was reserved answers configuration_error, not unknown session", async () => {
    const model = uniq("model");
    const claimed = uniq("claimed");
    const config = { ...(await sessionStub(await createSession({ model })).describe())!.config, id: claimed, owner: "squatter" };
    expect((await sessionStub(claimed).init(config)).ok).toBe(true);
    await poolStub().addSession(config);
    const ctx = createExecutionContext();
    const res = await app.fetch(
      new Request(`${ORIGIN}/api/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ prompt: "hello", max_tokens: 1 }),
      }),
      { ...env, DEFAULT_SESSION_ID: claimed },
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(503);
    expect((await errorOf(res)).error).toMatchObject({ code: "configuration_error", details: { session_id: claimed } });
  });

  it("a queue for an id nobody created writes nothing, whatever it is asked", async () => {
    const queue = sessionStub(uniq("made-up"));
    expect(await queue.describe("dev")).toBeNull();
    expect(await queue.listTasks("dev")).toBeNull();
    expect(await queue.getTask("1", "dev")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.access("dev")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.reserveTaskId("dev")).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    expect(await queue.submit(request("dev", "hello"))).toMatchObject({ ok: false, error: { code: "session_not_found" } });
    const tables = await runInDurableObject(queue, (_q, state) =>
      state.storage.sql.exec<{ name: string }>(`SELECT name FROM sqlite_master WHERE name NOT LIKE '_cf_%'`).toArray(),
    );
    expect(tables).toEqual([]);
  });
});
