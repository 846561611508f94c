import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, type Miner, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// Cancelling a task (POST /api/v1/tasks/:sid/:tid/cancel) against the real router (wrangler dev, real Durable
// Objects) and a real miner running the built-in model. Only a task's owner may cancel it: Bob's cancels of
// Alice's tasks, in her own session and in the shared default session, are 404 like an id nobody has, and her
// tasks complete; a cancel without a valid key is 401. Alice's own cancel ends her streamed completion with the
// task_cancelled error body, stops the miner's work, blames it for nothing and pays it for what she received.

const ALICE = "alice-cancel-0123456789abcdef";
const BOB = "bob-cancel-0123456789abcdef";
const PROMPT = "Alice's private prompt: write a long story about a lighthouse keeper and the sea";

let router: Router;
let miner: Miner;
let aliceSession: string;

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A call as `key`, retried while the router answers 429 (the abuse limits are not what this file tests). */
async function call(key: string | null, path: string, init: { method?: string; body?: unknown } = {}) {
  for (;;) {
    const res = await api(router, path, { ...init, key });
    if (res.status !== 429) return res;
    await wait(Number(res.headers.get("retry-after") ?? 1) * 1000);
  }
}

const cancel = (key: string | null, sid: string, tid: string, body?: unknown) =>
  call(key, `/api/v1/tasks/${sid}/${tid}/cancel`, { method: "POST", body });

/** A streamed completion as `key`, read as it arrives; resolves once its first chunk (naming the task) is in. */
async function streamStart(key: string, path: string, body: Record<string, unknown>) {
  const res = await fetch(`${router.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: PROMPT, max_tokens: 200, ...body, stream: true }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const data: string[] = [];
  let buffered = "";
  let ended = false;
  const until = async (pred: (d: string[]) => boolean) => {
    while (!pred(data) && !ended) {
      const { value, done } = await reader.read();
      if (done) ended = true;
      buffered += value ?? "";
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const d = frame
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart())
          .join("\n");
        if (d) data.push(d);
      }
    }
    return data;
  };
  const first = JSON.parse((await until((d) => d.length >= 1))[0]);
  return {
    taskId: first.task_id as string,
    sessionId: first.session_id as string,
    /** Every `data:` payload up to `[DONE]`. */
    rest: () => until((d) => d.at(-1) === "[DONE]"),
  };
}

/** A stream that completed: chunks then a finishing chunk and [DONE], no error body. */
function expectCompleted(data: string[]) {
  expect(data.at(-1)).toBe("[DONE]");
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
  expect(chunks.some((c) => c.error)).toBe(false);
  expect(["length", "stop"]).toContain(chunks.at(-1).choices[0].finish_reason);
}

beforeAll(async () => {
  router = await startRouter({ vars: { API_KEYS: `alice:${ALICE},bob:${BOB}` } });
  // The built-in model writes 200 tokens in well under a second: each result is held 2 s before its precommit so
  // the tasks are still running while this file cancels them.
  miner = await startMiner(router.url, { name: "cancel", concurrency: 2, args: ["--test-delay-ms", "2000"] });
  await miner.waitFor("ready", undefined, 120_000);
  const res = await call(ALICE, "/api/v1/sessions", { body: { deposit: 1_000_000, redundancy: 1 } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  aliceSession = res.body.id;
  await until(async () => (await call(ALICE, `/api/v1/sessions/${aliceSession}`)).body.usage?.connected_miners?.length >= 1, 30_000);
});

afterAll(async () => {
  await miner?.stop("SIGKILL");
  await router?.stop();
});

describe("who may cancel a task", () => {
  it("Bob cancelling Alice's task in her session is 404 like an unknown id; without a valid key 401; her task completes", async () => {
    const alice = await streamStart(ALICE, `/api/v1/completions/${aliceSession}`, {});
    const probes = [
      await cancel(BOB, aliceSession, alice.taskId),
      await cancel(BOB, aliceSession, alice.taskId, {}),
      await cancel(BOB, aliceSession, String(Number(alice.taskId) + 1000)),
    ];
    for (const p of probes) {
      expect(p.status).toBe(404);
      expect(p.body.error.code).toBe("session_not_found");
      expect(JSON.stringify(p.body)).not.toContain(PROMPT);
    }
    // Bob's answer for Alice's real task is the one for a task that does not exist: nothing tells them apart.
    expect(probes[0].body.error.message).toBe(`unknown session ${aliceSession}`);
    const anonymous = await cancel(null, aliceSession, alice.taskId);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe("unauthorized");
    const forged = await cancel("not-a-key-0123456789abcdef", aliceSession, alice.taskId);
    expect(forged.status).toBe(401);
    // All of it while Alice's task was still running.
    expect((await call(ALICE, `/api/v1/tasks/${aliceSession}/${alice.taskId}`)).body.status).not.toMatch(/closed|failed/);

    expectCompleted(await alice.rest());
    expect((await call(ALICE, `/api/v1/tasks/${aliceSession}/${alice.taskId}`)).body.status).toBe("closed");
    expect(miner.events.some((e) => e.event === "task_cancelled" && e.task_id === alice.taskId)).toBe(false);
  });

  it("in the shared default session, Bob cancelling Alice's task is 404 task_not_found and her task completes", async () => {
    const alice = await streamStart(ALICE, "/api/v1/completions", {});
    expect(alice.sessionId).toBe("default");
    const probe = await cancel(BOB, "default", alice.taskId);
    expect(probe.status).toBe(404);
    expect(probe.body.error.code).toBe("task_not_found");
    expect(JSON.stringify(probe.body)).not.toContain(PROMPT);
    expect((await call(ALICE, `/api/v1/tasks/default/${alice.taskId}`)).body.status).not.toMatch(/closed|failed/);

    expectCompleted(await alice.rest());
    expect((await call(ALICE, `/api/v1/tasks/default/${alice.taskId}`)).body.status).toBe("closed");
  });
});

describe("the owner cancels", () => {
  it("its streamed completion ends with the task_cancelled error body; the miner stops, is not blamed, and is paid what she received", async () => {
    const before = (await call(ALICE, `/api/v1/sessions/${aliceSession}`)).body.usage.used as number;
    const alice = await streamStart(ALICE, `/api/v1/completions/${aliceSession}`, {});
    const t0 = Date.now();
    const res = await cancel(ALICE, aliceSession, alice.taskId, {});
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ task_id: alice.taskId, session_id: aliceSession, status: "failed" });
    expect(res.body.error.code).toBe("task_cancelled");

    const data = await alice.rest();
    const cancelLatency = Date.now() - t0;
    expect(data.at(-1)).toBe("[DONE]");
    const last = JSON.parse(data.at(-2)!);
    expect(last.error.code).toBe("task_cancelled");
    expect(last.error.details).toMatchObject({ task_id: alice.taskId, status: "failed" });
    expect(typeof last.request_id).toBe("string");
    const received = data
      .slice(0, -2)
      .map((d) => JSON.parse(d).choices[0].text)
      .join("");
    expect(received.length).toBeGreaterThan(0);
    console.log(`cancel: stream ended ${cancelLatency} ms after the cancel, ${received.length} characters received`);

    // The real miner was told and stopped the task; a repeated cancel answers the same.
    await miner.waitFor("task_cancelled", (e) => e.task_id === alice.taskId && e.reason === "task_cancelled", 30_000);
    const again = await cancel(ALICE, aliceSession, alice.taskId);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(res.body);

    // Charged ⌈bytes received / 64⌉ tokens (no token is longer than 64 bytes), paid to the miner that streamed them.
    const charged = Math.ceil(new TextEncoder().encode(received).length / 64);
    expect((await call(ALICE, `/api/v1/sessions/${aliceSession}`)).body.usage.used - before).toBe(charged);
    const address = miner.address()!.toLowerCase();
    const entry = await until(async () => {
      const l = await call(ALICE, `/api/v1/miners/${address}/ledger`);
      return l.body.entries?.find((e: { task_id: string | null }) => e.task_id === alice.taskId);
    }, 30_000);
    expect(entry).toMatchObject({ kind: "reward", amount: charged, session_id: aliceSession });
    const nodes = (await call(ALICE, "/api/v1/miners")).body.nodes as { address: string; reputation: Record<string, number> }[];
    expect(nodes.find((n) => n.address === address)?.reputation).toMatchObject({ timeouts: 0, slashes: 0, outliers: 0 });

    // Its load was given back: the miner takes the next task at once.
    const next = await call(ALICE, `/api/v1/completions/${aliceSession}`, { body: { prompt: "Say hello", max_tokens: 8 } });
    expect(next.status, JSON.stringify(next.body)).toBe(200);
    // A finished task cannot be cancelled.
    const finished = await cancel(ALICE, aliceSession, next.body.task_id);
    expect(finished.status).toBe(409);
    expect(finished.body.error.code).toBe("task_finished");
  });
});
