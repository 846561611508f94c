import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type CatalogSession, planAssignments } from "../../durable-objects/pool-assignment.ts";
import { AuditGate } from "../../durable-objects/session-queue/audit-gate.ts";
import { Retention } from "../../durable-objects/session-queue/retention.ts";
import type { SessionConfig } from "../../shared/views.ts";
import app from "../../workers/index.ts";
import { issueMinerToken, verifyMinerToken } from "../../workers/lib/miner-token.ts";
import { inCatalog, rememberSession, UNKNOWN_MAX } from "../../workers/lib/tenancy.ts";
import { ipBucket } from "../../workers/middleware/rate-limit.ts";
import { createSession, env, MinerSet, ORIGIN, openSocket, poolStub, sessionStub, uniq, waitFor } from "./helpers.ts";

/** A whole session config, as the router would store it. */
const sessionDefaults = (id: string, model: string): SessionConfig => ({
  id,
  name: "",
  owner: "dev",
  metadata: {},
  model,
  min_miners: 1,
  max_miners: 8,
  redundancy: 1,
  validator_count: 0,
  consensus: "auto",
  dispersion_threshold: 0.75,
  embedding_model: "edge/tiny-embed",
  mode: "ephemeral",
  dedicated_miners: [],
  task_timeout: 60,
  ack_timeout: 5,
  deposit: 1000,
  created_at: Date.now(),
});

// The pure rules and object-level fixes of the security review of fb0d836 (H1, M2, M3, M6, M7, L5, and the
// generic 500); the attacks against the running router are in test/integration/attacks-review.test.ts.

const miners = new MinerSet();
afterEach(() => miners.closeAll());

const session = (id: string, owner: string, created_at: number, extra: Partial<CatalogSession> = {}): CatalogSession => ({
  id,
  owner,
  model: "m",
  mode: "ephemeral",
  dedicated_miners: [],
  max_miners: 8,
  created_at,
  ...extra,
});

describe("H1: sessions per miner (pool-assignment.ts)", () => {
  const plan = (sessions: CatalogSession[], capacity: number, perSlot: number, extra: { address: string; capacity: number }[] = []) =>
    planAssignments({
      sessions,
      miners: [{ address: "0xa", models: ["m"], capacity }, ...extra.map((m) => ({ ...m, models: ["m"] }))],
      before: new Map(),
      score: new Map(),
      perSlot,
    });

  it("a miner gets at most capacity × perSlot sessions: shared first, then each owner's in turn", () => {
    // Alice made three sessions before Bob made one; the shared session came last.
    const sessions = [
      session("a1", "alice", 1),
      session("a2", "alice", 2),
      session("a3", "alice", 3),
      session("b1", "bob", 4),
      session("s", "*", 5),
    ];
    expect(plan(sessions, 1, 2).get("0xa")).toEqual(["s", "a1"]);
    expect(plan(sessions, 1, 3).get("0xa")).toEqual(["s", "a1", "b1"]);
    expect(plan(sessions, 2, 2).get("0xa")).toEqual(["s", "a1", "b1", "a2"]);
    expect(plan(sessions, 1, 100).get("0xa")).toHaveLength(5);
  });

  it("10,000 sessions of one owner leave a miner its cap, and another owner's session still gets it", () => {
    const flood = Array.from({ length: 10_000 }, (_, i) => session(`x${i}`, "mallory", i));
    const planned = plan([...flood, session("b1", "bob", 20_000)], 1, 4);
    expect(planned.get("0xa")).toEqual(["x0", "b1", "x1", "x2"]);
  });

  it("dedicated sessions count against the cap, and max_miners still holds", () => {
    const d = (id: string, at: number) => session(id, "alice", at, { mode: "dedicated", dedicated_miners: ["0xa", "0xb"], max_miners: 1 });
    const planned = plan([d("d1", 1), d("d2", 2), d("d3", 3)], 1, 1, [{ address: "0xb", capacity: 1 }]);
    expect(planned.get("0xa")!.length + planned.get("0xb")!.length).toBe(2);
    expect(planned.get("0xa")).toHaveLength(1);
    expect(planned.get("0xb")).toHaveLength(1);
  });
});

describe("M2: audit rows per miner and reason class (session-queue/audit-gate.ts)", () => {
  it("one row per (miner, action, class) per window, at most rowsPerMiner rows per miner, then a new window", () => {
    const gate = new AuditGate({ windowMs: 1000, rowsPerMiner: 3, maxMiners: 100 });
    expect(gate.admit("0xa", "payload_key:not_allowlisted", 0)).toBe(true);
    for (let i = 0; i < 40; i++) expect(gate.admit("0xa", "payload_key:not_allowlisted", 10 + i)).toBe(false);
    expect(gate.admit("0xa", "payload_fetch:not_holder", 60)).toBe(true);
    expect(gate.admit("0xa", "result_write:bad_signature", 70)).toBe(true);
    expect(gate.admit("0xa", "result_write:claim_forbidden", 80)).toBe(false); // the miner's cap
    expect(gate.admit("0xb", "payload_key:not_allowlisted", 90)).toBe(true); // another miner
    expect(gate.admit("0xa", "payload_key:not_allowlisted", 1_001)).toBe(true); // the next window
  });

  it("remembers at most maxMiners miners", () => {
    const gate = new AuditGate({ windowMs: 60_000, rowsPerMiner: 3, maxMiners: 10 });
    for (let i = 0; i < 50; i++) expect(gate.admit(`0x${i}`, "k", 1)).toBe(true);
    expect(gate.size).toBeLessThanOrEqual(10);
  });
});

describe("M3: one spelling per token, IPv6 by /64, unknown ids cached", () => {
  const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const respell = (part: string) => part.slice(0, -1) + B64URL[B64URL.indexOf(part.at(-1)!) ^ 1];

  it("verifyMinerToken takes the canonical base64url of both parts only", async () => {
    const secret = "s".repeat(32);
    const claims = { address: `0x${"a".repeat(40)}`, capacity: 1, models: ["m"], device: "cpu", epoch: 3 };
    // Models of different lengths give bodies of every length mod 4: each with unused bits somewhere.
    for (const model of ["m", "mm", "mmm"]) {
      const { token } = await issueMinerToken(secret, { ...claims, models: [model] });
      expect(await verifyMinerToken(secret, token)).toMatchObject({ address: claims.address, epoch: 3 });
      const [body, sig] = token.split(".");
      expect(await verifyMinerToken(secret, `${body}.${respell(sig)}`)).toBeNull();
      if (body.length % 4 !== 0) expect(await verifyMinerToken(secret, `${respell(body)}.${sig}`)).toBeNull();
      expect(await verifyMinerToken(secret, `${body}=.${sig}`)).toBeNull();
    }
  });

  it("IPv6 addresses count by their /64; IPv4 (and IPv4-mapped IPv6) by the address", () => {
    expect(ipBucket("2001:db8:1:2:3:4:5:6")).toBe(ipBucket("2001:db8:1:2::9"));
    expect(ipBucket("2001:DB8:1:2::9")).toBe(ipBucket("2001:0db8:0001:0002:ffff::"));
    expect(ipBucket("2001:db8:1:2::1")).not.toBe(ipBucket("2001:db8:1:3::1"));
    expect(ipBucket("::1")).toBe(ipBucket("0:0:0:0:0:0:0:2"));
    expect(ipBucket("fe80::1%eth0")).toBe(ipBucket("fe80::2"));
    expect(ipBucket("203.0.113.7")).toBe("203.0.113.7");
    expect(ipBucket("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(ipBucket("203.0.113.7")).not.toBe(ipBucket("203.0.113.8"));
    // Not an address at all: kept as it came (bounded), never merged with a real one.
    expect(ipBucket("unknown")).toBe("unknown");
  });

  it("an unknown session id costs one NodePool call per isolate for a while, not one per request", async () => {
    const asked: string[] = [];
    const pool = {
      getSession: async (id: string) => {
        asked.push(id);
        return null;
      },
    };
    const fake = { NODE_POOL: { idFromName: () => ({}), get: () => pool } } as unknown as Env;
    const ghost = uniq("ghost");
    for (let i = 0; i < 20; i++) expect(await inCatalog(fake, ghost)).toBe(false);
    expect(asked).toEqual([ghost]);
    // A session created here afterwards is known at once (the creating isolate drops its negative entry).
    rememberSession(ghost);
    expect(await inCatalog(fake, ghost)).toBe(true);
    expect(asked).toEqual([ghost]);
  });

  it("the cache of unknown ids is bounded", async () => {
    let calls = 0;
    const pool = {
      getSession: async () => {
        calls++;
        return null;
      },
    };
    const fake = { NODE_POOL: { idFromName: () => ({}), get: () => pool } } as unknown as Env;
    const first = uniq("first");
    await inCatalog(fake, first);
    for (let i = 0; i < UNKNOWN_MAX + 10; i++) await inCatalog(fake, `${first}-${i}`);
    expect(calls).toBe(UNKNOWN_MAX + 11);
    await inCatalog(fake, first); // pushed out by the newer ones: asked again
    expect(calls).toBe(UNKNOWN_MAX + 12);
  });
});

describe("H1: the pool's pages", () => {
  it("a miner's sessions show only those the caller sees; pages of sessions go newest first", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model] });
    const mine = await createSession({ model });
    const pool = poolStub();
    const theirs = uniq("alice-s");
    const shared = uniq("shared-s");
    const config = (id: string, owner: string) => ({ ...sessionDefaults(id, model), owner });
    await pool.addSession(config(theirs, "alice"));
    await pool.addSession(config(shared, "*"));
    await waitFor(() => m.poolSessions().length === 3, "the miner to serve all three");
    const [seen] = await pool.minerViews([m.address], "dev");
    expect(new Set(seen.sessions)).toEqual(new Set([mine, shared]));
    const first = await pool.listSessions("dev", 1);
    expect(first.sessions.map((s) => s.id)).toEqual([shared]);
    expect(first.next_before).toBe(shared);
    const second = await pool.listSessions("dev", 1, shared);
    expect(second.sessions.map((s) => s.id)).toEqual([mine]); // alice's, between them, is not dev's to see
    expect((await pool.listSessions("dev", 1, theirs)).sessions).toEqual([]); // nor is it a cursor dev may use
  });
});

describe("M6: a join racing a revoke", () => {
  it("a session refuses a token below the epoch a revoke named, even when the pool said it was current", async () => {
    const model = uniq("model");
    const m = await miners.start({ models: [model] });
    const sid = await createSession({ model });
    await waitFor(() => m.poolSessions().includes(sid), "the pool to assign the session");
    const epoch = JSON.parse(atob(m.reg!.token.split(".")[0].replaceAll("-", "+").replaceAll("_", "/"))).epoch as number;
    // The revoke reaches the queue while the join is on its way (the pool has not bumped this epoch: only the
    // queue's floor can refuse it).
    const [join] = await Promise.all([
      openSocket(`/sessions/${sid}/connect`, m.reg!.token),
      sessionStub(sid).revokeMiner(m.address, epoch + 1),
    ]);
    expect(join.res.status).toBe(401);
    expect((await join.res.json<{ error: { message: string } }>()).error.message).toMatch(/revoked/);
    // Another miner is not affected.
    const other = await miners.start({ models: [model] });
    await waitFor(() => other.poolSessions().includes(sid), "the pool to assign the other miner");
    expect((await openSocket(`/sessions/${sid}/connect`, other.reg!.token)).res.status).toBe(101);
  });
});

/** An R2 bucket that counts the objects each list call returns. */
function counting(bucket: R2Bucket): { bucket: R2Bucket; listed: number[] } {
  const listed: number[] = [];
  const list = async (opts?: R2ListOptions) => {
    const page = await bucket.list(opts);
    listed.push(page.objects.length);
    return page;
  };
  return { bucket: { list, delete: (keys: string | string[]) => bucket.delete(keys) } as unknown as R2Bucket, listed };
}

function memoryStorage() {
  const map = new Map<string, unknown>();
  return {
    map,
    get: async <T>(key: string) => map.get(key) as T | undefined,
    put: async (key: string, value: unknown) => void map.set(key, value),
  };
}

describe("M7: the retention sweep resumes where it stopped", () => {
  it("more objects than one sweep lists: every expired object of a finished task goes, an open task's stay", async () => {
    const sid = uniq("ret");
    const put = (key: string) => env.PAYLOADS.put(key, "x");
    const open = Array.from({ length: 12 }, (_, i) => `payload/${sid}/1/${String(i).padStart(2, "0")}`);
    const finished = [...Array.from({ length: 12 }, (_, i) => `payload/${sid}/2/${String(i).padStart(2, "0")}`), `result/${sid}/2/0xabc/r`];
    const audits = [`audit/${sid}/1-a.json`, `audit/${sid}/2-b.json`, `audit/${sid}/3-c.json`];
    await Promise.all([...open, ...finished, ...audits].map(put));
    const { bucket, listed } = counting(env.PAYLOADS);
    const storage = memoryStorage();
    const retention = new Retention(bucket, 1_000, storage, { pageSize: 5, budget: 10 });
    let now = Date.now() + 60_000; // everything is past its 1 s
    let sweeps = 0;
    const left = async () => {
      const pages = await Promise.all(["payload", "result", "audit"].map((p) => env.PAYLOADS.list({ prefix: `${p}/${sid}/` })));
      return pages.flatMap((page) => page.objects.map((o) => o.key));
    };
    for (; sweeps < 30 && (await left()).length > open.length; sweeps++) {
      const before = listed.length;
      await retention.sweepIfDue(sid, now, (task) => task === 1);
      const thisSweep = listed.slice(before).reduce((a, b) => a + b, 0);
      expect(thisSweep).toBeLessThanOrEqual(10); // the budget per alarm
      now += 10 * 60_000;
    }
    console.log(
      `retention: ${finished.length + audits.length} expired objects behind ${open.length} of an open task, budget 10: ${sweeps} sweeps`,
    );
    expect((await left()).sort()).toEqual(open);
    // A new isolate (an evicted object) resumes from the stored cursor, not from the start.
    expect(storage.map.size).toBeGreaterThan(0);
    await env.PAYLOADS.delete(open);
  });
});

describe("L5: a reservation whose request fails before submit is released", () => {
  it("a v3 completion refused after its id was reserved leaves no reservation behind", async () => {
    const sid = await createSession({ model: uniq("model") });
    const ctx = createExecutionContext();
    const res = await app.request(
      `${ORIGIN}/api/v3/completions/${sid}`,
      {
        method: "POST",
        headers: { Authorization: "Bearer dev-key", "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "secret", private: true, payload_policy: "inline", max_tokens: 4 }),
      },
      env,
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(400);
    const queue = sessionStub(sid);
    const next = await queue.reserveTaskId("dev");
    if (!next.ok) throw new Error(next.error.message);
    // The refused request reserved the id before this one; the router gave it back.
    expect(await queue.releaseTaskId(next.task_id - 1)).toBe(false);
    expect(await queue.releaseTaskId(next.task_id)).toBe(true);
  });
});

describe("internal faults answer a generic 500", () => {
  it("a binding that throws inside a route answers internal_error, and the details go only to the log", async () => {
    const leak = "SQLITE_CORRUPT at /srv/secret/pool.sqlite (token=abc123)";
    const broken = {
      ...env,
      NODE_POOL: {
        idFromName: () => ({}),
        get: () => {
          throw new TypeError(leak);
        },
      },
    } as unknown as Env;
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      const ctx = createExecutionContext();
      const res = await app.request(`${ORIGIN}/api/v1/sessions`, { headers: { Authorization: "Bearer dev-key" } }, broken, ctx);
      await waitOnExecutionContext(ctx);
      expect(res.status).toBe(500);
      const text = await res.text();
      const body = JSON.parse(text);
      expect(body).toEqual({
        request_id: res.headers.get("x-request-id"),
        error: { code: "internal_error", message: "internal error", details: null },
      });
      expect(text).not.toMatch(/SQLITE|srv|secret|abc123|TypeError|stack/);
      expect(logged).toHaveBeenCalledWith(`request ${body.request_id} failed`, expect.objectContaining({ message: leak }));
    } finally {
      logged.mockRestore();
    }
  });
});
