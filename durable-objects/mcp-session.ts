import { DurableObject } from "cloudflare:workers";
import {
  MCP_IDLE_MS as IDLE_MS,
  MCP_LEGACY_MAX_AGE_MS as LEGACY_MAX_AGE_MS,
  MCP_MAX_FRAME_BYTES as MAX_FRAME_BYTES,
  MCP_MAX_STREAMS_PER_OWNER as MAX_STREAMS_PER_OWNER,
  type McpSessionKind,
} from "../shared/mcp-limits.ts";
import { SseWriter } from "./mcp-sse-writer.ts";
import { mcpSession, mcpStreams } from "./stubs.ts";

// One MCP session per object, named `session:<id>` (stubs.ts `mcpSession`): its owner (the API key's owner
// name), its kind, its times, the router tasks of tool calls in flight (so that `notifications/cancelled`,
// which may land in another isolate, cancels the right task) and, for a legacy HTTP+SSE session, the one open
// stream every POST of the session writes to. The same class, named `owner:<name>` (stubs.ts `mcpStreams`),
// counts an owner's open legacy streams so that no key holds unbounded streams (and objects in memory).
// Storage is written only once a session is opened: a made-up id leaves nothing behind.

export type { McpSessionKind };

/** The router task behind an MCP tool call in flight. */
export interface McpTaskRef {
  session_id: string;
  task_id: string;
}

interface SessionMeta {
  /** The session id (legacy only: to give its stream slot back). */
  id: string;
  owner: string;
  kind: McpSessionKind;
  created_at: number;
  last_used_at: number;
}

/** Tool calls tracked per session, and pending cancel marks kept; the oldest go first. */
export const MAX_TRACKED = 64;
/** How long a cancel that arrived before its call was tracked is remembered. */
export const CANCEL_MARK_MS = 10 * 60_000;
/** How long a claim over the cap waits for probed streams to tell whether their clients are still there. */
const PROBE_WAIT_MS = 1_500;
const PROBE_POLL_MS = 100;
/** Longer JSON-RPC ids (the client picks them) are neither tracked nor marked: storage keys stay small. */
const MAX_REQUEST_ID_CHARS = 256;
/** The largest `initialize` params kept for replay on later POSTs. */
const MAX_INIT_BYTES = 16 * 1024;

export type PushResult = "ok" | "gone" | "too_large";

/** How stale the stored last use may grow before a use writes it again. */
const USE_WRITE_MS = 60_000;

export class McpSession extends DurableObject<Env> {
  private meta: SessionMeta | null | undefined;
  private stream: SseWriter | null = null;
  /** last_used_at as stored: a use writes it again only once it is USE_WRITE_MS old. */
  private storedUse = 0;

  // ---- a session --------------------------------------------------------------------------------------------

  /** Creates the session, owned by `owner` (`id`: a legacy session's own, to give its stream slot back at the end). */
  async open(owner: string, kind: McpSessionKind, id = ""): Promise<void> {
    const now = Date.now();
    await this.save({ id, owner, kind, created_at: now, last_used_at: now });
    await this.ctx.storage.setAlarm(now + IDLE_MS[kind]);
  }

  /**
   * Opens a legacy session and its stream, answering the stream's readable end; null when the owner already
   * holds MAX_STREAMS_PER_OWNER open streams.
   */
  async openStream(owner: string, id: string, endpoint: string): Promise<ReadableStream<Uint8Array> | null> {
    if (!(await mcpStreams(this.env, owner).claimStream(id))) return null;
    await this.open(owner, "legacy", id);
    this.stream = new SseWriter(endpoint, () => this.ctx.waitUntil(this.expire()));
    return this.stream.readable;
  }

  /** The owner of a live session (and marks it used); null when unknown, expired or closed. */
  async owner(): Promise<string | null> {
    const meta = await this.live();
    if (!meta) return null;
    await this.touch(meta);
    return meta.owner;
  }

  /** Whether `owner` holds this live session; marks it used only then (another key cannot keep it alive). */
  async use(owner: string): Promise<boolean> {
    const meta = await this.live();
    if (meta?.owner !== owner) return false;
    await this.touch(meta);
    return true;
  }

  /**
   * Marks the session used. Every request of a session passes here, so the write waits until the stored time is
   * USE_WRITE_MS old: an eviction forgets at most that much of the idle clock (sessions idle out after minutes).
   */
  private async touch(meta: SessionMeta): Promise<void> {
    meta.last_used_at = Date.now();
    if (meta.last_used_at - this.storedUse >= USE_WRITE_MS) await this.save(meta);
  }

  /** Ends the session (its stream too); false when there was none. */
  async close(): Promise<boolean> {
    const had = (await this.live()) !== null;
    await this.expire();
    return had;
  }

  /** Writes a comment on the legacy stream, whose client may have gone unnoticed; answers whether it is open. */
  async probe(): Promise<boolean> {
    return this.stream?.comment("probe") === true;
  }

  /** Writes one JSON-RPC message on the legacy stream. */
  async push(json: string): Promise<PushResult> {
    if (json.length > MAX_FRAME_BYTES) return "too_large";
    if (!(await this.live()) || !this.stream?.message(json)) return "gone";
    return "ok";
  }

  /** Keeps the client's `initialize` params, replayed on the fresh server every later POST builds. */
  async setInitParams(params: string): Promise<boolean> {
    if (params.length > MAX_INIT_BYTES || !(await this.live())) return false;
    await this.ctx.storage.put("init", params);
    return true;
  }

  async initParams(): Promise<string | null> {
    return (await this.ctx.storage.get<string>("init")) ?? null;
  }

  // ---- tool calls in flight (request ids are JSON.stringify of the JSON-RPC id) --------------------------------

  /** Remembers the router task of a call in flight; true when a cancel for it came first (cancel it now). */
  async track(requestId: string, task: McpTaskRef): Promise<boolean> {
    if (!keyable(requestId) || !(await this.live())) return false;
    const mark = await this.ctx.storage.get<{ at: number }>(`cancel:${requestId}`);
    if (mark) {
      await this.ctx.storage.delete(`cancel:${requestId}`);
      if (Date.now() - mark.at < CANCEL_MARK_MS) return true;
    }
    await this.bounded("call:");
    await this.ctx.storage.put(`call:${requestId}`, { session_id: task.session_id, task_id: task.task_id, at: Date.now() });
    return false;
  }

  async untrack(requestId: string): Promise<void> {
    if (keyable(requestId)) await this.ctx.storage.delete(`call:${requestId}`);
  }

  async lookup(requestId: string): Promise<McpTaskRef | null> {
    if (!keyable(requestId)) return null;
    const call = await this.ctx.storage.get<McpTaskRef>(`call:${requestId}`);
    return call ? { session_id: call.session_id, task_id: call.task_id } : null;
  }

  /** The tracked task of a cancelled call (forgotten now), else null after leaving a short-lived cancel mark. */
  async cancel(requestId: string): Promise<McpTaskRef | null> {
    if (!keyable(requestId) || !(await this.live())) return null;
    const call = await this.lookup(requestId);
    if (call) {
      await this.untrack(requestId);
      return call;
    }
    await this.bounded("cancel:");
    await this.ctx.storage.put(`cancel:${requestId}`, { at: Date.now() });
    return null;
  }

  // ---- an owner's open legacy streams (the `owner:<name>` object) ---------------------------------------------

  /** Counts a new stream against the owner's cap; false when the owner holds MAX_STREAMS_PER_OWNER already. */
  async claimStream(sessionId: string): Promise<boolean> {
    let held = await this.ctx.storage.list<number>({ prefix: "stream:" });
    if (held.size >= MAX_STREAMS_PER_OWNER) {
      await this.prune(held);
      held = await this.ctx.storage.list<number>({ prefix: "stream:" });
    }
    // Only storage calls from the count to the write: the input gate keeps another claim from interleaving.
    if (held.size >= MAX_STREAMS_PER_OWNER) return false;
    await this.ctx.storage.put(`stream:${sessionId}`, Date.now());
    return true;
  }

  /**
   * Drops the entries of streams that have ended: past their maximum age, on an evicted object, or whose client
   * went away unnoticed. A client's disconnect surfaces only when something is written to its stream, so each
   * is probed with comments for up to PROBE_WAIT_MS.
   */
  private async prune(held: Map<string, number>): Promise<void> {
    const now = Date.now();
    let ids = [...held].filter(([, openedAt]) => now - openedAt < LEGACY_MAX_AGE_MS).map(([key]) => key.slice("stream:".length));
    await this.ctx.storage.delete([...held.keys()].filter((key) => !ids.includes(key.slice("stream:".length))));
    for (const until = Date.now() + PROBE_WAIT_MS; ; ) {
      // A write to a connection the peer has closed may still succeed once (the reset comes back later): again.
      const open = await Promise.all(
        ids.map((id) =>
          mcpSession(this.env, id)
            .probe()
            .catch(() => true),
        ),
      );
      const ended = ids.filter((_, i) => !open[i]);
      await this.ctx.storage.delete(ended.map((id) => `stream:${id}`));
      ids = ids.filter((_, i) => open[i]);
      if (ids.length < MAX_STREAMS_PER_OWNER || Date.now() >= until) return;
      await scheduler.wait(PROBE_POLL_MS);
    }
  }

  async releaseStream(sessionId: string): Promise<void> {
    await this.ctx.storage.delete(`stream:${sessionId}`);
    if ((await this.ctx.storage.list({ prefix: "stream:", limit: 1 })).size === 0) await this.ctx.storage.deleteAll();
  }

  async openStreams(): Promise<number> {
    return (await this.ctx.storage.list({ prefix: "stream:" })).size;
  }

  // ---- expiry ------------------------------------------------------------------------------------------------

  override async alarm(): Promise<void> {
    const meta = await this.load();
    if (!meta) return void (await this.ctx.storage.deleteAll());
    const at = expiresAt(meta);
    if (Date.now() >= at) await this.expire();
    else await this.ctx.storage.setAlarm(at);
  }

  /** The session, unless it is unknown, past its expiry, or a legacy session whose stream has gone. */
  private async live(): Promise<SessionMeta | null> {
    const meta = await this.load();
    if (!meta) return null;
    if (Date.now() >= expiresAt(meta) || (meta.kind === "legacy" && !this.stream?.open)) {
      await this.expire();
      return null;
    }
    return meta;
  }

  private async load(): Promise<SessionMeta | null> {
    if (this.meta === undefined) {
      this.meta = (await this.ctx.storage.get<SessionMeta>("meta")) ?? null;
      this.storedUse = this.meta?.last_used_at ?? 0;
    }
    return this.meta;
  }

  private async save(meta: SessionMeta): Promise<void> {
    this.meta = meta;
    this.storedUse = meta.last_used_at;
    await this.ctx.storage.put("meta", meta);
  }

  /** Ends the stream, gives the owner's stream slot back and deletes everything. */
  private async expire(): Promise<void> {
    const meta = await this.load();
    const stream = this.stream;
    this.stream = null;
    this.meta = null;
    stream?.end();
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    if (meta?.kind === "legacy") await mcpStreams(this.env, meta.owner).releaseStream(meta.id);
  }

  /** Drops the oldest entries under `prefix` so that one more fits within MAX_TRACKED. */
  private async bounded(prefix: string): Promise<void> {
    const entries = [...(await this.ctx.storage.list<{ at: number }>({ prefix }))];
    const now = Date.now();
    const stale = entries.filter(([, v]) => prefix === "cancel:" && now - v.at > CANCEL_MARK_MS).map(([k]) => k);
    const rest = entries.filter(([k]) => !stale.includes(k)).sort((a, b) => a[1].at - b[1].at);
    const excess = rest.slice(0, Math.max(0, rest.length - MAX_TRACKED + 1)).map(([k]) => k);
    if (stale.length + excess.length) await this.ctx.storage.delete([...stale, ...excess]);
  }
}

function expiresAt(meta: SessionMeta): number {
  const idle = meta.last_used_at + IDLE_MS[meta.kind];
  return meta.kind === "legacy" ? Math.min(idle, meta.created_at + LEGACY_MAX_AGE_MS) : idle;
}

/** A request id that can name a storage key (a caller may pass anything, e.g. the JSON of a missing id). */
function keyable(requestId: unknown): requestId is string {
  return typeof requestId === "string" && requestId.length > 0 && requestId.length <= MAX_REQUEST_ID_CHARS;
}
