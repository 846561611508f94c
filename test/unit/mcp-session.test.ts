import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { MAX_TRACKED, type McpSession } from "../../durable-objects/mcp-session.ts";
import { mcpSession, mcpStreams } from "../../durable-objects/stubs.ts";
import {
  MCP_IDLE_MS as IDLE_MS,
  MCP_LEGACY_MAX_AGE_MS as LEGACY_MAX_AGE_MS,
  MCP_MAX_FRAME_BYTES as MAX_FRAME_BYTES,
  MCP_MAX_STREAMS_PER_OWNER as MAX_STREAMS_PER_OWNER,
} from "../../shared/mcp-limits.ts";
import { env, uniq, waitFor } from "./helpers.ts";

// The McpSession Durable Object (durable-objects/mcp-session.ts) in the Workers runtime: ownership, the
// registry of tool calls in flight, expiry by alarm, and the legacy stream with its per-owner cap.

const TASK = { session_id: "s-1", task_id: "7" };
const hexId = () => Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
const keys = (stub: DurableObjectStub<McpSession>) =>
  runInDurableObject(stub, async (_o, state) => [...(await state.storage.list()).keys()]);

/** Moves a session's clock back by `ms` (as if it had been idle that long). */
async function age(stub: DurableObjectStub<McpSession>, ms: number, field: "last_used_at" | "created_at" = "last_used_at") {
  await runInDurableObject(stub, async (o, state) => {
    const meta = (await state.storage.get<Record<string, number>>("meta"))!;
    meta[field] -= ms;
    await state.storage.put("meta", meta);
    (o as unknown as { meta: undefined }).meta = undefined; // reread from storage
  });
}

/** Reads SSE text from a stream until `pred` holds. */
async function readUntil(reader: ReadableStreamDefaultReader<string>, pred: (text: string) => boolean, text = ""): Promise<string> {
  while (!pred(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended: ${text}`);
    text += value;
  }
  return text;
}

describe("McpSession: a session and its tool calls", () => {
  it("belongs to its owner only, and writes nothing for an unknown id", async () => {
    const unknown = mcpSession(env, uniq("nobody"));
    expect(await unknown.owner()).toBeNull();
    expect(await unknown.use("alice")).toBe(false);
    expect(await unknown.track("1", TASK)).toBe(false);
    expect(await unknown.cancel("1")).toBeNull();
    expect(await keys(unknown)).toEqual([]);

    const stub = mcpSession(env, uniq("s"));
    await stub.open("alice", "streamable");
    expect(await stub.owner()).toBe("alice");
    expect(await stub.use("bob")).toBe(false);
    expect(await stub.use("alice")).toBe(true);
    expect(await stub.close()).toBe(true);
    expect(await stub.owner()).toBeNull();
    expect(await stub.close()).toBe(false);
    expect(await keys(stub)).toEqual([]);
  });

  it("tracks calls in flight for cancellation, including a cancel that arrives first", async () => {
    const stub = mcpSession(env, uniq("s"));
    await stub.open("alice", "streamable");
    expect(await stub.track("1", TASK)).toBe(false);
    expect(await stub.track('"1"', { session_id: "s-2", task_id: "8" })).toBe(false); // the string id "1" is another call
    expect(await stub.lookup("1")).toEqual(TASK);
    expect(await stub.cancel("1")).toEqual(TASK);
    expect(await stub.lookup("1")).toBeNull(); // forgotten once cancelled
    expect(await stub.lookup('"1"')).toEqual({ session_id: "s-2", task_id: "8" });
    await stub.untrack('"1"');
    expect(await stub.lookup('"1"')).toBeNull();
    // The cancel came before the call knew its task: a mark, and the call's track answers "cancel it now".
    expect(await stub.cancel("2")).toBeNull();
    expect(await stub.track("2", TASK)).toBe(true);
    expect(await stub.lookup("2")).toBeNull();
    expect(await stub.track("2", TASK)).toBe(false); // the mark is used up
    // A client-chosen id too long for a storage key is neither tracked nor marked (and fails nothing).
    const long = JSON.stringify("x".repeat(5_000));
    expect(await stub.cancel(long)).toBeNull();
    expect(await stub.track(long, TASK)).toBe(false);
    expect(await stub.lookup(long)).toBeNull();
    await stub.untrack(long);
    // JSON.stringify of a missing id is undefined: nothing to track or mark, and no fault.
    expect(await stub.cancel(undefined as unknown as string)).toBeNull();
  });

  it("keeps at most MAX_TRACKED calls and cancel marks, dropping the oldest", async () => {
    const stub = mcpSession(env, uniq("s"));
    await stub.open("alice", "streamable");
    for (let i = 0; i < MAX_TRACKED + 5; i++) await stub.track(String(i), { session_id: "s", task_id: String(i) });
    for (let i = 0; i < MAX_TRACKED + 5; i++) await stub.cancel(`m${i}`);
    const all = await keys(stub);
    expect(all.filter((k) => k.startsWith("call:")).length).toBe(MAX_TRACKED);
    expect(all.filter((k) => k.startsWith("cancel:")).length).toBe(MAX_TRACKED);
    expect(await stub.lookup("0")).toBeNull();
    expect(await stub.lookup(String(MAX_TRACKED + 4))).toEqual({ session_id: "s", task_id: String(MAX_TRACKED + 4) });
  });

  it("expires when idle: the alarm deletes its storage, and a used session lives on", async () => {
    const idle = mcpSession(env, uniq("s"));
    const used = mcpSession(env, uniq("s"));
    for (const stub of [idle, used]) {
      await stub.open("alice", "streamable");
      await stub.track("1", TASK);
      await age(stub, IDLE_MS.streamable - 60_000);
    }
    expect(await used.use("alice")).toBe(true); // last use is now again
    await age(idle, 60_001);
    await age(used, 60_001);
    expect(await runDurableObjectAlarm(idle)).toBe(true);
    expect(await keys(idle)).toEqual([]);
    expect(await idle.owner()).toBeNull();
    // The other one's alarm finds it used since, and re-arms for its new expiry.
    expect(await runDurableObjectAlarm(used)).toBe(true);
    expect(await used.owner()).toBe("alice");
    expect(await used.lookup("1")).toEqual(TASK);
    const alarm = await runInDurableObject(used, (_o, state) => state.storage.getAlarm());
    expect(alarm).toBeGreaterThan(Date.now() + IDLE_MS.streamable - 120_000);
  });
});

describe("McpSession: the idle clock's writes", () => {
  it("writes a use at most once a minute (every request of a session passes here); an older stored use is written again", async () => {
    const stub = mcpSession(env, uniq("s"));
    await stub.open("alice", "streamable");
    const stored = () =>
      runInDurableObject(stub, async (_o, state) => (await state.storage.get<{ last_used_at: number }>("meta"))!.last_used_at);
    const first = await stored();
    await new Promise((r) => setTimeout(r, 20));
    expect(await stub.use("alice")).toBe(true);
    expect(await stub.owner()).toBe("alice");
    expect(await stored()).toBe(first); // used again within a minute of the stored use: nothing written
    await age(stub, 60_000);
    const aged = await stored();
    expect(await stub.use("alice")).toBe(true);
    expect(await stored()).toBeGreaterThanOrEqual(aged + 60_000);
  });
});

describe("McpSession: the legacy stream", () => {
  async function openLegacy(owner: string) {
    const id = hexId();
    const stub = mcpSession(env, id);
    const readable = await stub.openStream(owner, id, `/mcp/legacy/messages?sessionId=${id}`);
    return { id, stub, reader: readable?.pipeThrough(new TextDecoderStream()).getReader() ?? null };
  }

  it("starts with the endpoint event and writes each pushed message as an event", async () => {
    const { id, stub, reader } = await openLegacy(uniq("owner"));
    const head = await readUntil(reader!, (t) => t.includes("\n\n"));
    expect(head).toBe(`event: endpoint\ndata: /mcp/legacy/messages?sessionId=${id}\n\n`);
    expect(await stub.push(JSON.stringify({ jsonrpc: "2.0", id: 1, result: {} }))).toBe("ok");
    const text = await readUntil(reader!, (t) => t.includes("\n\n"));
    expect(text).toBe(`event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n`);
    expect(await stub.push("x".repeat(MAX_FRAME_BYTES + 1))).toBe("too_large");
    await reader!.cancel();
  });

  it("ends when its reader goes away: later pushes find it gone and its storage is deleted", async () => {
    const owner = uniq("owner");
    const { stub, reader } = await openLegacy(owner);
    expect(await stub.use(owner)).toBe(true);
    expect(await mcpStreams(env, owner).openStreams()).toBe(1);
    await reader!.cancel();
    await waitFor(async () => (await stub.push("{}")) === "gone", "the stream to end");
    expect(await stub.use(owner)).toBe(false);
    await waitFor(async () => (await mcpStreams(env, owner).openStreams()) === 0, "the owner's slot back");
    expect(await keys(stub)).toEqual([]);
  });

  it("caps an owner's open streams; a closed one frees its slot, and other owners are not affected", async () => {
    const owner = uniq("owner");
    const open = [];
    for (let i = 0; i < MAX_STREAMS_PER_OWNER; i++) open.push(await openLegacy(owner));
    expect(open.every((s) => s.reader)).toBe(true);
    const refused = await openLegacy(owner);
    expect(refused.reader).toBeNull();
    expect(await keys(refused.stub)).toEqual([]); // a refused stream left no session behind
    expect((await openLegacy(uniq("other"))).reader).not.toBeNull();
    await open[0].stub.close();
    const again = await openLegacy(owner);
    expect(again.reader).not.toBeNull();
    for (const s of [...open.slice(1), again]) await s.stub.close();
    expect(await mcpStreams(env, owner).openStreams()).toBe(0);
  });

  it("frees the slot of a stream that ended without telling (a restarted object), once the owner is at the cap", async () => {
    const owner = uniq("owner");
    const open = [];
    for (let i = 0; i < MAX_STREAMS_PER_OWNER; i++) open.push(await openLegacy(owner));
    // What a restart leaves: storage, but no stream in memory (and no word to the counter).
    await runInDurableObject(open[0].stub, (o) => void ((o as unknown as { stream: null }).stream = null));
    expect(await mcpStreams(env, owner).openStreams()).toBe(MAX_STREAMS_PER_OWNER); // nobody told the counter
    expect(await open[0].stub.use(owner)).toBe(false); // the session knows its stream is gone
    const next = await openLegacy(owner);
    expect(next.reader).not.toBeNull();
    expect(await mcpStreams(env, owner).openStreams()).toBe(MAX_STREAMS_PER_OWNER);
    for (const s of [...open.slice(1), next]) await s.stub.close();
  });

  it("expires after its idle time and at its maximum age, closing the stream", async () => {
    const owner = uniq("owner");
    const idle = await openLegacy(owner);
    const old = await openLegacy(owner);
    await age(idle.stub, IDLE_MS.legacy + 1);
    await old.stub.use(owner);
    await age(old.stub, LEGACY_MAX_AGE_MS + 1, "created_at");
    for (const s of [idle, old]) {
      expect(await runDurableObjectAlarm(s.stub)).toBe(true);
      expect(await keys(s.stub)).toEqual([]);
      await readUntil(s.reader!, (t) => t.includes("endpoint")); // what was written stays readable
      await waitFor(async () => (await s.reader!.read()).done, "the stream to close");
    }
    expect(await mcpStreams(env, owner).openStreams()).toBe(0);
  });
});
