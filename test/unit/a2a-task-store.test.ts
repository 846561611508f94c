import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { A2A_MAX_TASK_CHARS, A2A_MAX_TASKS, A2A_TASK_TTL_MS, type A2ATaskStore } from "../../durable-objects/a2a-task-store.ts";
import { a2aTasks } from "../../durable-objects/stubs.ts";
import { api, env, json, uniq } from "./helpers.ts";

// The A2A task store (durable-objects/a2a-task-store.ts): one object per API-key owner, an ended task keeps its
// end state, the owner's tasks are capped (oldest finished first) and expire after A2A_TASK_TTL_MS.

const WORKING = 2;
const COMPLETED = 3;
const CANCELED = 5;
const row = (id: string, state: number, json = `{"id":"${id}","state":${state}}`) => ({ id, context_id: "ctx", state, json });

describe("A2ATaskStore", () => {
  it("keeps an ended task's end state against later saves in another state", async () => {
    const store = a2aTasks(env, uniq("owner"));
    expect(await store.save(row("t1", WORKING))).toEqual({ saved: true });
    expect(await store.save(row("t1", CANCELED))).toEqual({ saved: true });
    const refused = await store.save(row("t1", COMPLETED));
    expect(refused).toMatchObject({ saved: false, state: CANCELED });
    expect(await store.save(row("t1", WORKING))).toMatchObject({ saved: false, state: CANCELED });
    expect(await store.load("t1")).toBe(row("t1", CANCELED).json);
    // The same end state may still be written (the executor's own canceled event after a CancelTask).
    expect(await store.save(row("t1", CANCELED, '{"again":true}'))).toEqual({ saved: true });
  });

  it("is one object per owner: another owner's task id is unknown there", async () => {
    const alice = uniq("alice");
    await a2aTasks(env, alice).save(row("shared-id", WORKING));
    expect(await a2aTasks(env, alice).load("shared-id")).not.toBeNull();
    expect(await a2aTasks(env, uniq("bob")).load("shared-id")).toBeNull();
  });

  it("refuses a task past its size bound", async () => {
    const store = a2aTasks(env, uniq("owner"));
    expect(await store.save(row("big", WORKING, "x".repeat(A2A_MAX_TASK_CHARS + 1)))).toEqual({
      saved: false,
      too_large: A2A_MAX_TASK_CHARS + 1,
    });
    expect(await store.load("big")).toBeNull();
  });

  it("caps an owner's tasks: a new one evicts the oldest finished task, never a running one first", async () => {
    const stub = a2aTasks(env, uniq("owner"));
    await stub.save(row("seed", WORKING));
    await runInDurableObject(stub, (_o: A2ATaskStore, state) => {
      const sql = state.storage.sql;
      // Running tasks are the oldest; finished ones come after them.
      for (let i = 1; i < A2A_MAX_TASKS; i++) {
        const s = i < 500 ? WORKING : COMPLETED;
        sql.exec(`INSERT INTO tasks (id, context_id, state, updated_at, json) VALUES (?, 'c', ?, ?, '{}')`, `t${i}`, s, i);
      }
    });
    await stub.save(row("newest", WORKING));
    const left = await runInDurableObject(stub, (_o: A2ATaskStore, state) =>
      state.storage.sql
        .exec<{ id: string }>(`SELECT id FROM tasks`)
        .toArray()
        .map((r) => r.id),
    );
    expect(left.length).toBe(A2A_MAX_TASKS);
    expect(left).toContain("newest");
    expect(left).toContain("t1"); // the oldest row, but running
    expect(left).not.toContain("t500"); // the oldest finished one
  });

  it("expires tasks after their TTL with an alarm that re-arms for the rest", async () => {
    const stub = a2aTasks(env, uniq("owner"));
    await stub.save(row("old", COMPLETED));
    await stub.save(row("fresh", WORKING));
    await runInDurableObject(stub, (_o: A2ATaskStore, state) => {
      state.storage.sql.exec(`UPDATE tasks SET updated_at = ? WHERE id = 'old'`, Date.now() - A2A_TASK_TTL_MS - 1000);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.load("old")).toBeNull();
    expect(await stub.load("fresh")).not.toBeNull();
    const alarm = await runInDurableObject(stub, (_o: A2ATaskStore, state) => state.storage.getAlarm());
    expect(alarm).toBeGreaterThan(Date.now() + A2A_TASK_TTL_MS - 60_000);
  });

  it("lists an owner's tasks newest first, by page, filtered by context", async () => {
    const stub = a2aTasks(env, uniq("owner"));
    for (const id of ["a", "b", "c"]) {
      await stub.save({ ...row(id, WORKING), context_id: id === "b" ? "other" : "ctx" });
      await new Promise((r) => setTimeout(r, 5));
    }
    const first = await stub.list({ limit: 2 });
    expect(first.total).toBe(3);
    expect(first.tasks.map((j) => JSON.parse(j).id)).toEqual(["c", "b"]);
    const second = await stub.list({ limit: 2, after: first.last! });
    expect(second.tasks.map((j) => JSON.parse(j).id)).toEqual(["a"]);
    expect((await stub.list({ limit: 10, context_id: "other" })).tasks.map((j) => JSON.parse(j).id)).toEqual(["b"]);
  });
});

describe("GetTask on a task nobody will finish (workers/a2a/reconcile.ts)", () => {
  /** A WORKING task of the unit key's owner (`dev`) whose status last moved at `at`, with no router task recorded. */
  async function orphan(at: Date): Promise<string> {
    const id = uniq("orphan");
    const task = { id, contextId: "ctx", status: { state: "TASK_STATE_WORKING", timestamp: at.toISOString() }, artifacts: [], history: [] };
    await a2aTasks(env, "dev").save({ id, context_id: "ctx", state: WORKING, json: JSON.stringify(task) });
    return id;
  }
  const getTask = async (id: string) =>
    json<{ result: { status: { state: string }; metadata?: { error?: { code: string } } } }>(
      await api("POST", "/a2a", { jsonrpc: "2.0", id: 1, method: "GetTask", params: { id } }, { headers: { "A2A-Version": "1.0" } }),
    );

  it("ends it failed `timeout` once it has not moved for longer than any REST deadline", async () => {
    const id = await orphan(new Date(Date.now() - 16 * 60_000));
    const { result } = await getTask(id);
    expect(result.status.state).toBe("TASK_STATE_FAILED");
    expect(result.metadata?.error?.code).toBe("timeout");
    expect(JSON.parse((await a2aTasks(env, "dev").load(id))!).status.state).toBe("TASK_STATE_FAILED");
  });

  it("leaves a task that moved recently running", async () => {
    const id = await orphan(new Date(Date.now() - 60_000));
    expect((await getTask(id)).result.status.state).toBe("TASK_STATE_WORKING");
  });
});
