import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { type Address, type Hex, verifyMessage, verifyTypedData } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterEach, describe, expect, it } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import { MinerAgent } from "../../miner-agent/src/agent.ts";
import type { Engine, GenerateRequest, GenerateResult } from "../../miner-agent/src/engine-types.ts";
import { createLogger } from "../../miner-agent/src/log.ts";
import { type AssignMessage, PoolMinerMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitTypedData, registrationMessage, resultHash, signingDomain } from "../../shared/signing.ts";

// The miner agent's side of the wire protocol, against a small in-process stand-in for the router (HTTP
// challenge/register + the two WebSocket channels) and a scripted engine. The real router and the real
// engine are exercised by the end-to-end tests; this pins down the miner's own behaviour: ordering,
// concurrency, dedupe, cancel, reconnect with outbox replay, 401 re-registration and the shutdown drain.

const MODEL = "edge/tiny-gpt2";
/** The deployment the fake router says it is (its origin is added per request). */
const FAKE_ROUTER = { name: "fake-router", chain_id: 31337, address: null };

// ── a fake router ─────────────────────────────────────────────────────────────────────────────────────

type Msg = Record<string, unknown> & { type: string };

class FakeRouter {
  server: Server;
  wss = new WebSocketServer({ noServer: true });
  url = "";
  tokens = new Map<string, string>(); // token → address
  registrations: Record<string, unknown>[] = [];
  pool: WebSocket | null = null;
  poolConnects = 0;
  heartbeats: Msg[] = [];
  sessionList: { session_id: string; model: string }[] = [];
  sockets = new Map<string, WebSocket>();
  received = new Map<string, Msg[]>(); // session → miner messages, across reconnects
  closeCodes: number[] = [];
  refused401 = 0;
  badFrames: string[] = [];
  /** The protocol its welcome names: 1 is a router from before folded commits. */
  protocol = 1;
  /** Every session frame as it came over the wire (a folded precommit is one frame). */
  frames: string[] = [];

  constructor() {
    this.server = createServer((req, res) => void this.#http(req, res));
    this.server.on("upgrade", (req, socket, head) => this.#upgrade(req, socket as Socket, head));
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  setSessions(list: string[]): void {
    this.sessionList = list.map((session_id) => ({ session_id, model: MODEL }));
    this.pool?.send(JSON.stringify({ type: "sessions", sessions: this.sessionList }));
  }

  sendTo(sid: string, msg: unknown): void {
    this.sockets.get(sid)!.send(typeof msg === "string" ? msg : JSON.stringify(msg));
  }

  msgs(sid: string, taskId?: string): Msg[] {
    const all = this.received.get(sid) ?? [];
    return taskId ? all.filter((m) => m.task_id === taskId) : all;
  }

  async #http(req: IncomingMessage, res: import("node:http").ServerResponse): Promise<void> {
    let raw = "";
    for await (const c of req) raw += c;
    const body = JSON.parse(raw || "{}");
    const send = (status: number, obj: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "x-request-id": "req-1" });
      res.end(JSON.stringify(obj));
    };
    // It names itself (and the origin it answers at) as a real router does; the agent signs for it.
    const router = { ...FAKE_ROUTER, origin: `http://${req.headers.host}` };
    if (req.url === "/api/v1/miners/challenge") {
      const nonce = "nonce-" + Math.random().toString(36).slice(2);
      return send(200, {
        address: body.address,
        nonce,
        message: registrationMessage(body.address, nonce, router),
        expires_at: Date.now() + 60_000,
        router,
      });
    }
    if (req.url === "/api/v1/miners/register") {
      const ok = await verifyMessage({
        address: body.address,
        message: registrationMessage(body.address, body.nonce, router),
        signature: body.signature,
      });
      if (!ok) return send(401, { request_id: "req-1", error: { code: "unauthorized", message: "bad signature" } });
      this.registrations.push(body);
      const token = "tok-" + Math.random().toString(36).slice(2);
      this.tokens.set(token, body.address);
      return send(200, { address: body.address, token, expires_at: Date.now() + 3_600_000, heartbeat_ms: 100, router });
    }
    send(404, { request_id: "req-1", error: { code: "not_found", message: "no route" } });
  }

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    const miner = this.tokens.get(token);
    if (!miner) {
      this.refused401++;
      const body = JSON.stringify({ request_id: "r", error: { code: "unauthorized", message: "bad token" } });
      socket.end(
        `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
      );
      return;
    }
    const m = /^\/api\/v1\/sessions\/([^/]+)\/connect$/.exec(req.url ?? "");
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("close", (code) => this.closeCodes.push(code));
      if (req.url === "/api/v1/miners/connect") {
        this.pool = ws;
        this.poolConnects++;
        ws.on("message", (d) => {
          const p = PoolMinerMessage.safeParse(JSON.parse(String(d)));
          if (!p.success) this.badFrames.push(String(d));
          else this.heartbeats.push(p.data as Msg);
        });
        ws.send(JSON.stringify({ type: "registered", address: miner, heartbeat_ms: 100, block: 1 }));
        ws.send(JSON.stringify({ type: "sessions", sessions: this.sessionList }));
        return;
      }
      if (m) {
        const sid = decodeURIComponent(m[1]!);
        this.sockets.set(sid, ws);
        ws.on("message", (d) => {
          this.frames.push(String(d));
          const p = SessionMinerMessage.safeParse(JSON.parse(String(d)));
          if (!p.success) this.badFrames.push(String(d));
          else this.received.set(sid, [...(this.received.get(sid) ?? []), p.data as Msg]);
        });
        ws.send(JSON.stringify({ type: "welcome", session_id: sid, miner, model: MODEL, block: 1, protocol: this.protocol }));
        return;
      }
      ws.close(4404, "unknown path");
    });
  }
}

// ── a scripted engine: prompt "slow:<ms>" paces tokens, "boom" throws ───────────────────────────────────

class ScriptedEngine implements Engine {
  readonly model = MODEL;
  readonly device = "cpu" as const;
  calls: string[] = [];
  active = 0;
  maxActive = 0;

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const prompt = req.input.prompt;
    this.calls.push(prompt);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    const t0 = Date.now();
    try {
      if (prompt === "boom") throw new Error("kaboom");
      const pace = Number(/^slow:(\d+)/.exec(prompt)?.[1] ?? 5);
      const pieces = ["Hello", ",", " world", "!"].slice(0, req.params.max_tokens);
      let text = "";
      for (const p of pieces) {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, pace);
          req.signal?.addEventListener(
            "abort",
            () => {
              clearTimeout(t);
              reject(new DOMException("aborted", "AbortError"));
            },
            { once: true },
          );
        });
        text += p;
        req.onToken?.(p);
      }
      return {
        text: `${text} (${prompt})`,
        finish_reason: "length",
        usage: { prompt_tokens: 3, completion_tokens: pieces.length },
        inference_ms: Date.now() - t0,
      };
    } finally {
      this.active--;
    }
  }

  async dispose(): Promise<void> {}
}

// ── harness ───────────────────────────────────────────────────────────────────────────────────────────

interface Harness {
  router: FakeRouter;
  engine: ScriptedEngine;
  agent: MinerAgent;
  address: Address;
  events: Record<string, unknown>[];
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function start(opts: { concurrency?: number; drainMs?: number; sessions?: string[]; protocol?: number } = {}): Promise<Harness> {
  const router = new FakeRouter();
  router.protocol = opts.protocol ?? 1;
  router.sessionList = (opts.sessions ?? ["s1"]).map((session_id) => ({ session_id, model: MODEL }));
  await router.listen();
  const engine = new ScriptedEngine();
  const account = privateKeyToAccount(generatePrivateKey());
  const events: Record<string, unknown>[] = [];
  const log = createLogger({ format: "json", write: (line) => events.push(JSON.parse(line)) });
  const agent = new MinerAgent({
    routerUrl: router.url,
    engine,
    wallet: { address: account.address, account },
    concurrency: opts.concurrency ?? 1,
    drainMs: opts.drainMs ?? 2_000,
    log,
    name: "test",
    version: "0.0.0-test",
  });
  cleanups.push(async () => {
    await agent.shutdown();
    await router.close();
  });
  await agent.start();
  const h = { router, engine, agent, address: account.address, events };
  await waitFor(() => events.some((e) => e.event === "ready"), "ready");
  for (const sid of opts.sessions ?? ["s1"]) {
    await waitFor(() => events.some((e) => e.event === "session_joined" && e.session_id === sid), `join ${sid}`);
  }
  return h;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function assign(taskId: string, prompt: string, extra: Partial<AssignMessage> = {}): AssignMessage {
  return {
    type: "assign",
    session_id: "s1",
    task_id: taskId,
    model: MODEL,
    input: { prompt, prompt_type: 1 },
    params: { max_tokens: 16, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 },
    stream: false,
    ack_deadline: Date.now() + 5_000,
    commit_deadline: Date.now() + 30_000,
    block: 1,
    ...extra,
  };
}

const types = (ms: Msg[]) => ms.map((m) => m.type);

// ── tests ─────────────────────────────────────────────────────────────────────────────────────────────

describe("miner agent ↔ router protocol", () => {
  it("registers with a signed challenge, heartbeats, and runs a streamed task to a verifiable commit", async () => {
    const h = await start({ concurrency: 2 });
    expect(h.router.registrations).toHaveLength(1);
    expect(h.router.registrations[0]).toMatchObject({ models: [MODEL], device: "cpu", capacity: 2, name: "test" });
    await waitFor(() => h.router.heartbeats.length >= 2, "heartbeats");
    const hb = h.router.heartbeats[0]!;
    expect(hb.inflight).toBe(0);
    expect(typeof hb.cpu_usage).toBe("number");
    expect(hb.memory_mb as number).toBeGreaterThan(0);

    h.router.sendTo("s1", assign("1", "p1", { stream: true }));
    await waitFor(() => h.router.msgs("s1", "1").some((m) => m.type === "commit"), "commit");
    const got = h.router.msgs("s1", "1");
    expect(types(got)).toEqual(["ack", "token", "token", "token", "token", "precommit", "commit"]);
    expect(got.filter((m) => m.type === "token").map((m) => m.seq)).toEqual([0, 1, 2, 3]);
    const commit = got.at(-1)!;
    const pre = got.at(-2)!;
    expect(commit).toMatchObject({
      text: "Hello, world! (p1)",
      finish_reason: "length",
      usage: { prompt_tokens: 3, completion_tokens: 4 },
    });
    // The precommit is the miner's commitment to its text: bound to session, task and miner.
    expect(pre.hash).toBe(commitmentHash({ session: "s1", task: "1", miner: h.address, result: resultHash(commit.text as string) }));
    const valid = await verifyTypedData({
      address: h.address,
      ...precommitTypedData({ session: "s1", task: "1", miner: h.address, hash: pre.hash as Hex }, signingDomain(FAKE_ROUTER)),
      signature: pre.signature as Hex,
    });
    expect(valid).toBe(true);
    const done = h.events.find((e) => e.event === "task_done")!;
    expect(done.msg).toMatch(/^task s1\/1 done in \d+ ms, 4 tokens \([\d.]+ tok\/s\), finish=length$/);
    expect(h.router.badFrames).toEqual([]);
  });

  it("does not stream when stream is false", async () => {
    const h = await start();
    h.router.sendTo("s1", assign("1", "p"));
    await waitFor(() => h.router.msgs("s1", "1").length === 3, "3 messages");
    expect(types(h.router.msgs("s1", "1"))).toEqual(["ack", "precommit", "commit"]);
  });

  it("folds the commit into its precommit for a protocol-2 router, in one frame, also when it re-delivers", async () => {
    const h = await start({ protocol: 2 });
    h.router.sendTo("s1", assign("1", "p"));
    await waitFor(() => h.router.msgs("s1", "1").length === 2, "2 messages");
    await new Promise((r) => setTimeout(r, 100)); // nothing more comes
    const [ack, pre] = h.router.msgs("s1", "1");
    expect(types([ack!, pre!])).toEqual(["ack", "precommit"]);
    expect(h.router.frames.filter((f) => f.includes('"task_id":"1"'))).toHaveLength(2);
    const commit = pre!.commit as Msg;
    expect(commit).toMatchObject({ type: "commit", task_id: "1", text: "Hello, world! (p)", finish_reason: "length" });
    expect(pre!.hash).toBe(commitmentHash({ session: "s1", task: "1", miner: h.address, result: resultHash(commit.text as string) }));
    // The router lost both (an eviction before their transaction): the re-sent assign gets them again, folded.
    h.router.sendTo("s1", assign("1", "p"));
    await waitFor(() => h.router.msgs("s1", "1").length === 4, "replayed result");
    expect(types(h.router.msgs("s1", "1").slice(2))).toEqual(["ack", "precommit"]);
    expect(h.router.msgs("s1", "1")[3]!.commit).toEqual(commit);
    expect(h.engine.calls).toEqual(["p"]);
    expect(h.router.badFrames).toEqual([]);
  });

  it("honours --concurrency, queues in arrival order and never runs a re-sent assign twice", async () => {
    const h = await start({ concurrency: 1 });
    h.router.sendTo("s1", assign("2", "slow:40"));
    h.router.sendTo("s1", assign("3", "slow:5"));
    h.router.sendTo("s1", assign("2", "slow:40")); // re-sent while running
    h.router.sendTo("s1", assign("3", "slow:5")); // re-sent while queued
    await waitFor(() => h.router.msgs("s1", "3").some((m) => m.type === "commit"), "b commit");
    expect(h.engine.calls).toEqual(["slow:40", "slow:5"]);
    expect(h.engine.maxActive).toBe(1);
    expect(types(h.router.msgs("s1", "2"))).toEqual(["ack", "ack", "precommit", "commit"]);
    // Acks are immediate, even for the queued task.
    expect(types(h.router.msgs("s1")).slice(0, 4)).toEqual(["ack", "ack", "ack", "ack"]);

    // Re-sent after completion (router lost our commit): re-ack and re-deliver, still no second run.
    h.router.sendTo("s1", assign("2", "slow:40"));
    await waitFor(() => h.router.msgs("s1", "2").length === 7, "replayed result");
    expect(types(h.router.msgs("s1", "2")).slice(4)).toEqual(["ack", "precommit", "commit"]);
    expect(h.engine.calls).toHaveLength(2);
  });

  it("cancel stops a running task and sends nothing more for it; a queued one never starts", async () => {
    const h = await start({ concurrency: 1 });
    h.router.sendTo("s1", assign("4", "slow:100", { stream: true }));
    h.router.sendTo("s1", assign("5", "slow:5"));
    await waitFor(() => h.engine.active === 1, "running");
    h.router.sendTo("s1", { type: "cancel", task_id: "5", reason: "reassigned" });
    h.router.sendTo("s1", { type: "cancel", task_id: "4", reason: "client gone" });
    await new Promise((r) => setTimeout(r, 300));
    expect(types(h.router.msgs("s1", "4")).filter((t) => t !== "token")).toEqual(["ack"]);
    expect(types(h.router.msgs("s1", "5"))).toEqual(["ack"]);
    expect(h.engine.calls).toEqual(["slow:100"]);
    expect(h.events.filter((e) => e.event === "task_cancelled")).toHaveLength(2);
  });

  it("releases a task whose generation fails, and one whose model differs", async () => {
    const h = await start();
    h.router.sendTo("s1", assign("6", "boom"));
    h.router.sendTo("s1", assign("7", "p", { model: "someone/else" }));
    await waitFor(() => h.router.msgs("s1", "6").some((m) => m.type === "release"), "release");
    await waitFor(() => h.router.msgs("s1", "7").some((m) => m.type === "release"), "release");
    expect(h.router.msgs("s1", "6").at(-1)).toMatchObject({ type: "release", reason: "engine error: kaboom" });
    expect(h.router.msgs("s1", "7").at(-1)!.reason).toMatch(/model mismatch/);
  });

  it("rejects malformed frames and releases a malformed assign at once", async () => {
    const h = await start();
    h.router.sendTo("s1", "not json");
    h.router.sendTo("s1", { type: "assign", task_id: "8", session_id: "s1" });
    await waitFor(() => h.router.msgs("s1", "8").length === 1, "release of malformed assign");
    expect(h.router.msgs("s1", "8")[0]).toMatchObject({ type: "release" });
    expect(h.events.filter((e) => String(e.msg).includes("malformed message"))).toHaveLength(2);
    // Still serving.
    h.router.sendTo("s1", assign("9", "p"));
    await waitFor(() => h.router.msgs("s1", "9").some((m) => m.type === "commit"), "commit");
  });

  it("keeps running through a dropped session socket and delivers the result after reconnecting", async () => {
    const h = await start();
    h.router.sendTo("s1", assign("10", "slow:80"));
    await waitFor(() => h.engine.active === 1, "running");
    const first = h.router.sockets.get("s1")!;
    first.terminate();
    await waitFor(() => h.router.msgs("s1", "10").some((m) => m.type === "commit"), "commit after reconnect");
    expect(h.router.sockets.get("s1")).not.toBe(first);
    expect(types(h.router.msgs("s1", "10"))).toEqual(["ack", "precommit", "commit"]);
    expect(h.engine.calls).toHaveLength(1);
    expect(h.events.some((e) => e.event === "session_joined" && e.reconnect === true)).toBe(true);
  });

  it("follows the pool's session list: joins new sessions and leaves dropped ones", async () => {
    const h = await start({ sessions: ["s1"] });
    h.router.setSessions(["s1", "s2"]);
    await waitFor(() => h.events.some((e) => e.event === "session_joined" && e.session_id === "s2"), "join s2");
    h.router.setSessions(["s2"]);
    await waitFor(() => h.events.some((e) => e.event === "session_left" && e.session_id === "s1"), "leave s1");
    await waitFor(() => h.router.closeCodes.includes(1000), "clean close");
    expect(h.agent.sessionIds).toEqual(["s2"]);
  });

  it("re-registers when a socket upgrade is refused with 401", async () => {
    const h = await start();
    h.router.tokens.clear(); // the router forgot every token (restart with a new secret)
    h.router.pool!.terminate();
    h.router.sockets.get("s1")!.terminate();
    await waitFor(() => h.router.refused401 > 0 && h.router.poolConnects === 2, "reconnected pool");
    await waitFor(() => h.events.filter((e) => e.event === "session_joined").length === 2, "rejoined session");
    expect(h.router.registrations.length).toBe(2); // one re-registration shared by both sockets
    h.router.sendTo("s1", assign("11", "p"));
    await waitFor(() => h.router.msgs("s1", "11").some((m) => m.type === "commit"), "commit");
  });

  it("shutdown hands back queued tasks at once, waits for running ones, releases them after drain-ms, closes with 1000", async () => {
    const h = await start({ concurrency: 1, drainMs: 150 });
    h.router.sendTo("s1", assign("12", "slow:400"));
    h.router.sendTo("s1", assign("13", "p"));
    await waitFor(() => h.engine.active === 1 && h.router.msgs("s1").length === 2, "running + queued");
    const t0 = Date.now();
    await h.agent.shutdown();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    await waitFor(() => h.router.closeCodes.length >= 2, "closes");
    expect(h.router.msgs("s1", "13").at(-1)).toMatchObject({ type: "release", reason: "shutdown" });
    expect(h.router.msgs("s1", "12").at(-1)).toMatchObject({ type: "release", reason: "shutdown" });
    expect(h.router.closeCodes.every((c) => c === 1000)).toBe(true);
    expect(h.engine.calls).toEqual(["slow:400"]);
  });

  it("shutdown lets a task that finishes within drain-ms deliver its commit", async () => {
    const h = await start({ concurrency: 1, drainMs: 2_000 });
    h.router.sendTo("s1", assign("14", "slow:30"));
    await waitFor(() => h.engine.active === 1, "running");
    await h.agent.shutdown();
    expect(types(h.router.msgs("s1", "14"))).toEqual(["ack", "precommit", "commit"]);
  });

  it("keeps retrying registration while the router is down, then comes up", async () => {
    const router = new FakeRouter();
    await router.listen();
    const url = router.url;
    await router.close(); // nothing listens there now
    const engine = new ScriptedEngine();
    const account = privateKeyToAccount(generatePrivateKey());
    const events: Record<string, unknown>[] = [];
    const agent = new MinerAgent({
      routerUrl: url,
      engine,
      wallet: { address: account.address, account },
      concurrency: 1,
      drainMs: 100,
      log: createLogger({ format: "json", write: (l) => events.push(JSON.parse(l)) }),
    });
    const started = agent.start();
    await waitFor(() => events.filter((e) => String(e.msg).startsWith("register:")).length >= 2, "retries");
    expect(String(events.find((e) => String(e.msg).startsWith("register:"))!.msg)).toMatch(/unreachable \(ECONNREFUSED\); retry 1 in/);
    const port = Number(new URL(url).port);
    const again = new FakeRouter();
    again.sessionList = [];
    await new Promise<void>((r) => again.server.listen(port, "127.0.0.1", r));
    again.url = url;
    cleanups.push(async () => {
      await agent.shutdown();
      await again.close();
    });
    await started;
    await waitFor(() => events.some((e) => e.event === "ready"), "ready", 15_000);
  }, 20_000);
});
