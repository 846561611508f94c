import { exports, env as workersEnv } from "cloudflare:workers";
import type { Hex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import type { ReplicaOutcome } from "../../durable-objects/reputation.ts";
import {
  type AssignMessage,
  type EmbedMessage,
  PoolServerMessage,
  parseMessage,
  type SessionMinerMessage,
  SessionServerMessage,
  type VerifyMessage,
} from "../../shared/protocol.ts";
import {
  commitmentHash,
  precommitTypedData,
  type RouterIdentity,
  resultHash,
  type SigningDomain,
  signingDomain,
} from "../../shared/signing.ts";
import type { SessionUsage, TaskView } from "../../shared/views.ts";

// Test harness for the unit project: the real router (the Worker's default export) and the real Durable
// Objects, driven by a protocol-correct test miner that lives in the test itself. Every test uses fresh
// session ids, fresh wallet keys and its own model name, so tests never see each other's miners even though
// the NodePool is one object per test file.

export const env = workersEnv as unknown as Env;
const router = (exports as unknown as { default: Fetcher }).default;

export const ORIGIN = "https://router.test";
export const API_KEY = "dev-key";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A short unique suffix, so ids, models and names never collide across tests. */
export function uniq(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** Polls `fn` until it returns something truthy; fails with `what` after `timeout` ms. */
export async function waitFor<T>(
  fn: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  what: string,
  timeout = 10_000,
  interval = 20,
): Promise<T> {
  const until = Date.now() + timeout;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await sleep(interval);
  }
}

// ── HTTP ───────────────────────────────────────────────────────────────────────────────────────────────

export interface ApiOptions {
  /** API key; null sends no Authorization header. */
  key?: string | null;
  headers?: Record<string, string>;
  /** Raw body (sent as is) instead of JSON. */
  raw?: string;
  signal?: AbortSignal;
}

export function api(method: string, path: string, body?: unknown, opts: ApiOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...opts.headers };
  const key = opts.key === undefined ? API_KEY : opts.key;
  if (key !== null) headers.Authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (opts.raw !== undefined) payload = opts.raw;
  else if (body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) headers["Content-Type"] ??= "application/json";
  return router.fetch(`${ORIGIN}/api/v1${path}`, { method, headers, body: payload, signal: opts.signal });
}

export async function json<T = any>(res: Response): Promise<T> {
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`expected JSON (status ${res.status}), got: ${text.slice(0, 500)}`);
  }
}

export interface ErrorBody {
  request_id: string;
  error: { code: string; message: string; details: unknown };
}

/** Asserts the house error shape and returns it; request_id must equal the X-Request-ID header. */
export async function errorOf(res: Response): Promise<ErrorBody> {
  const body = await json<ErrorBody>(res);
  const header = res.headers.get("X-Request-ID");
  if (!header) throw new Error("error response has no X-Request-ID header");
  if (body.request_id !== header) throw new Error(`request_id ${body.request_id} ≠ X-Request-ID ${header}`);
  if (!body.error || typeof body.error.code !== "string" || typeof body.error.message !== "string" || !("details" in body.error)) {
    throw new Error(`not an error body: ${JSON.stringify(body)}`);
  }
  return body;
}

export interface SessionOptions {
  model: string;
  session_id?: string;
  deposit?: number;
  redundancy?: number;
  max_miners?: number;
  task_timeout?: number;
  ack_timeout?: number;
  [key: string]: unknown;
}

/** Creates a session through the router and returns its id. */
export async function createSession(opts: SessionOptions): Promise<string> {
  const session_id = opts.session_id ?? uniq("s");
  const res = await api("POST", "/sessions", { deposit: 1_000_000, ...opts, session_id });
  if (res.status !== 201) throw new Error(`session create failed: ${res.status} ${await res.text()}`);
  return session_id;
}

export async function getTask(sid: string, tid: string): Promise<TaskView> {
  const res = await api("GET", `/tasks/${sid}/${tid}`);
  if (res.status !== 200) throw new Error(`GET task ${sid}/${tid}: ${res.status} ${await res.text()}`);
  return json<TaskView>(res);
}

export async function getSession(sid: string): Promise<{ usage: SessionUsage; [k: string]: any }> {
  const res = await api("GET", `/sessions/${sid}`);
  if (res.status !== 200) throw new Error(`GET session ${sid}: ${res.status} ${await res.text()}`);
  return json(res);
}

export function complete(sid: string, body: Record<string, unknown>, opts: ApiOptions = {}): Promise<Response> {
  return api("POST", `/completions/${sid}`, { max_tokens: 16, ...body }, opts);
}

/** Waits until the task's persisted status is `status`. */
export function waitForStatus(sid: string, tid: string, status: string, timeout = 10_000): Promise<TaskView> {
  return waitFor(
    async () => {
      const t = await getTask(sid, tid);
      return t.status === status ? t : null;
    },
    `task ${sid}/${tid} to be ${status}`,
    timeout,
  );
}

/** Reads a whole SSE response: the `data:` payloads in order. */
export async function readSSE(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split(/\r?\n\r?\n/)
    .map((block) =>
      block
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n"),
    )
    .filter((d) => d.length > 0);
}

// ── stubs ──────────────────────────────────────────────────────────────────────────────────────────────

export const sessionStub = (sid: string) => env.SESSION_QUEUE.get(env.SESSION_QUEUE.idFromName(sid));
export const oracleStub = () => env.ORACLE.get(env.ORACLE.idFromName("oracle"));
export const poolStub = () => env.NODE_POOL.get(env.NODE_POOL.idFromName("pool"));

/** One replica's outcome as a SessionQueue reports it to the pool (session "s", owner "dev"). */
export const replicaOutcome = (miner: string, kind: ReplicaOutcome["outcome"], reward: number, task: string): ReplicaOutcome => ({
  miner,
  session_id: "s",
  task_id: task,
  owner: "dev",
  outcome: kind,
  reason: kind === "agreed" ? null : "test",
  latency_ms: kind === "agreed" ? 40 : null,
  reward,
  at: Date.now(),
  block: 3,
});

// ── the test miner ─────────────────────────────────────────────────────────────────────────────────────

/**
 * How a test miner answers an `assign`:
 * - `honest`: ack → tokens (when streaming) → precommit → commit, `delayMs` apart (0: back to back, as the
 *   real agent sends precommit and commit).
 * - `manual`: records the assign and does nothing; the test drives each step (ack, precommit, commit…).
 * - `never_ack`: ignores assigns.
 * - `hold`: acks, computes its result, then waits for `finish(sid, tid)`.
 * - `bad_signature`: precommit signed by another key.
 * - `commit_mismatch`: commits a text other than the one it precommitted.
 * - `release`: acks, then hands the task back.
 * - `disconnect_after_ack`: acks, then closes its session socket.
 * - `hold_commit`: precommits at once, and holds its commit until `finish` (a straggler bound by its commitment).
 */
export type Behaviour =
  | "honest"
  | "manual"
  | "never_ack"
  | "hold"
  | "hold_commit"
  | "bad_signature"
  | "commit_mismatch"
  | "release"
  | "disconnect_after_ack";

export interface MinerOptions {
  models: string[];
  capacity?: number;
  device?: "cpu" | "webgpu";
  name?: string;
  behaviour?: Behaviour;
  delayMs?: number;
  /** The result text for an assign (default: `answer to <prompt>`). */
  text?: (a: AssignMessage) => string;
  /** How the text is cut into token messages when the client streams. */
  chunks?: (text: string) => string[];
  usage?: (a: AssignMessage, text: string) => { prompt_tokens: number; completion_tokens: number };
  finishReason?: "stop" | "length";
  /** Declared stake (default 1000; the unit project's MIN_STAKE is 100). */
  stake?: number;
  /** Declared decode speed, tokens/s (absent: none, so the router allows DEADLINE_TOKEN_MS per token). */
  tokensPerS?: number;
  /** How this miner answers `embed` (validation work); null stays silent. Absent: silent. */
  embed?: (msg: EmbedMessage) => SessionMinerMessage | null;
  /** How this miner answers `verify` (verified sampling); null stays silent. Absent: silent. */
  verify?: (msg: VerifyMessage) => SessionMinerMessage | null;
  /** The token ids a verified task's commit carries (default: one per character, as many as the usage claims). */
  tokenIds?: (a: AssignMessage, text: string) => number[];
}

/** A deterministic bag-of-words vector (64 hashed buckets): a stand-in embedder for test validators. */
export function bagOfWords(text: string): number[] {
  const v = new Array<number>(64).fill(0);
  for (const w of text.toLowerCase().match(/[a-z0-9]+/g) ?? []) {
    let h = 0;
    for (const ch of w) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    v[h % 64] += 1;
  }
  return v;
}

/** A validator that embeds with bagOfWords under `model`. */
export const honestValidator =
  (model: string) =>
  (msg: EmbedMessage): SessionMinerMessage => ({
    type: "embeddings",
    task_id: msg.task_id,
    model,
    vectors: msg.texts.map(bagOfWords),
  });

export interface Registration {
  address: string;
  token: string;
  expires_at: number;
  heartbeat_ms: number;
  /** The deployment registered with: precommits are signed for its domain. */
  router: RouterIdentity;
}

type SessionMsg = SessionServerMessage;
type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

export const defaultText = (a: AssignMessage) => `answer to ${a.input.prompt}`;
/** Test token ids: a character's code each (test validators decode them back with String.fromCharCode). */
export const charIds = (_a: AssignMessage, text: string) => [...text].map((c) => c.codePointAt(0)!);
const defaultChunks = (text: string) => text.match(/.{1,4}/gs) ?? [text];
/** At most a token per prompt character, at most max_tokens: what the router accepts from a miner (miner-input.ts). */
const defaultUsage = (a: AssignMessage, text: string) => ({
  prompt_tokens: a.input.prompt.length,
  completion_tokens: Math.min(text.length, a.params.max_tokens),
});

export async function challenge(
  address: string,
): Promise<{ nonce: string; message: string; address: string; expires_at: number; router: RouterIdentity }> {
  const res = await api("POST", "/miners/challenge", { address }, { key: null });
  if (res.status !== 200) throw new Error(`challenge: ${res.status} ${await res.text()}`);
  return json(res);
}

/** Opens a WebSocket through the router; returns the accepted client end (or the refusal response). */
export async function openSocket(path: string, token: string | null): Promise<{ res: Response; ws: WebSocket | null }> {
  const headers: Record<string, string> = { Upgrade: "websocket" };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  const res = await router.fetch(`${ORIGIN}/api/v1${path}`, { headers });
  const ws = res.webSocket;
  if (!ws) return { res, ws: null };
  ws.accept();
  return { res, ws };
}

export class TestMiner {
  readonly account: PrivateKeyAccount;
  readonly opts: MinerOptions;
  behaviour: Behaviour;
  delayMs: number;
  reg: Registration | null = null;
  pool: WebSocket | null = null;
  poolMessages: PoolServerMessage[] = [];
  /** Session sockets by session id. */
  readonly sockets = new Map<string, WebSocket>();
  /** Everything the router sent on each session channel, across reconnects. */
  readonly received = new Map<string, SessionMsg[]>();
  /** Everything this miner sent on each session channel. */
  readonly sent = new Map<string, SessionMinerMessage[]>();
  /** Assigns seen (deduplicated by session/task), in order. */
  readonly assigns: (AssignMessage & { sid: string })[] = [];
  readonly cancelled = new Set<string>();
  /** Assigns received again for a task this miner already holds. */
  readonly repeats: (AssignMessage & { sid: string })[] = [];
  /** Tasks this miner has acked (`sid/tid`). */
  readonly acked = new Set<string>();
  /** Results computed and held (behaviour `hold`), by `sid/tid`. */
  readonly held = new Map<string, () => Promise<void>>();
  readonly errors: unknown[] = [];
  /** Tasks being worked on now (assign received, run not finished), and the most at once. */
  inflight = 0;
  maxInflight = 0;

  constructor(opts: MinerOptions, account: PrivateKeyAccount = privateKeyToAccount(generatePrivateKey())) {
    this.account = account;
    this.opts = opts;
    this.behaviour = opts.behaviour ?? "honest";
    this.delayMs = opts.delayMs ?? 0;
  }

  /** The EIP-712 domain of the router this miner registered with. */
  get domain(): SigningDomain {
    if (!this.reg) throw new Error("not registered");
    return signingDomain(this.reg.router);
  }

  /** The address as the router keys it (lowercase). */
  get address(): string {
    return this.account.address.toLowerCase();
  }

  /** Registers, opens the pool channel and waits for the first `sessions` list. */
  static async start(opts: MinerOptions): Promise<TestMiner> {
    const m = new TestMiner(opts);
    await m.register();
    await m.connectPool();
    return m;
  }

  /** challenge → sign → register. */
  async register(): Promise<Registration> {
    const ch = await challenge(this.account.address);
    const signature = await this.account.signMessage({ message: ch.message });
    const res = await api(
      "POST",
      "/miners/register",
      {
        address: this.account.address,
        nonce: ch.nonce,
        signature,
        models: this.opts.models,
        device: this.opts.device ?? "cpu",
        capacity: this.opts.capacity ?? 4,
        name: this.opts.name,
        version: "test",
        stake: this.opts.stake ?? 1000,
        ...(this.opts.tokensPerS ? { tokens_per_s: this.opts.tokensPerS } : {}),
      },
      { key: null },
    );
    if (res.status !== 200) throw new Error(`register: ${res.status} ${await res.text()}`);
    this.reg = await json<Registration>(res);
    return this.reg;
  }

  async connectPool(): Promise<void> {
    const { res, ws } = await openSocket("/miners/connect", this.reg!.token);
    if (!ws) throw new Error(`pool connect refused: ${res.status} ${await res.text()}`);
    this.pool = ws;
    ws.addEventListener("message", (ev) => {
      const msg = parseMessage(PoolServerMessage, ev.data as string);
      if (msg) this.poolMessages.push(msg);
      else this.errors.push(`bad pool frame ${String(ev.data)}`);
    });
    await waitFor(() => this.poolMessages.some((m) => m.type === "sessions"), "the pool's sessions message");
  }

  /** The latest session list the pool sent. */
  poolSessions(): string[] {
    const last = [...this.poolMessages].reverse().find((m) => m.type === "sessions");
    return last && last.type === "sessions" ? last.sessions.map((s) => s.session_id) : [];
  }

  closePool(code = 1000): void {
    this.pool?.close(code, "test closes the pool channel");
    this.pool = null;
  }

  /** Waits until the pool lists `sid` for this miner, then opens the session channel and waits for `welcome`. */
  async join(sid: string, opts: { waitForPool?: boolean } = {}): Promise<WebSocket> {
    if (opts.waitForPool !== false) await waitFor(() => this.poolSessions().includes(sid), `pool to list ${sid} for ${this.address}`);
    const { res, ws } = await openSocket(`/sessions/${sid}/connect`, this.reg!.token);
    if (!ws) throw new Error(`session connect refused: ${res.status} ${await res.text()}`);
    const before = (this.received.get(sid) ?? []).length;
    this.sockets.set(sid, ws);
    ws.addEventListener("message", (ev) => this.onSessionMessage(sid, ws, ev.data as string));
    await waitFor(() => (this.received.get(sid) ?? []).slice(before).some((m) => m.type === "welcome"), `welcome on ${sid}`);
    return ws;
  }

  /** Closes the session socket (as a crash or network drop would). */
  leave(sid: string, code = 1000): void {
    const ws = this.sockets.get(sid);
    this.sockets.delete(sid);
    ws?.close(code, "test miner leaves");
  }

  close(): void {
    for (const sid of [...this.sockets.keys()]) this.leave(sid);
    this.closePool();
  }

  send(sid: string, msg: SessionMinerMessage): void {
    const ws = this.sockets.get(sid);
    if (!ws) throw new Error(`no socket for ${sid}`);
    ws.send(JSON.stringify(msg));
    const list = this.sent.get(sid) ?? [];
    list.push(msg);
    this.sent.set(sid, list);
  }

  messages(sid: string, tid?: string): SessionMsg[] {
    const all = this.received.get(sid) ?? [];
    return tid === undefined ? all : all.filter((m) => "task_id" in m && m.task_id === tid);
  }

  /** Waits for an assign on `sid` (the first one not already in `after`) and returns it. */
  async nextAssign(sid: string, after = 0, timeout = 10_000): Promise<AssignMessage & { sid: string }> {
    return waitFor(() => this.assigns.filter((a) => a.sid === sid)[after], `assign #${after + 1} on ${sid} for ${this.address}`, timeout);
  }

  assignsFor(sid: string): (AssignMessage & { sid: string })[] {
    return this.assigns.filter((a) => a.sid === sid);
  }

  // ── protocol steps (also usable by hand in `manual` mode) ─────────────────────────────────────────

  ack(sid: string, tid: string): void {
    this.acked.add(`${sid}/${tid}`);
    this.send(sid, { type: "ack", task_id: tid });
  }

  tokens(sid: string, tid: string, pieces: string[]): void {
    for (const [seq, text] of pieces.entries()) this.send(sid, { type: "token", task_id: tid, seq, text });
  }

  /** EIP-712 precommit signature; `signer` defaults to this miner's key. */
  async sign(sid: string, tid: string, hash: Hex, signer: PrivateKeyAccount = this.account): Promise<Hex> {
    return signer.signTypedData(precommitTypedData({ session: sid, task: tid, miner: this.account.address, hash }, this.domain));
  }

  /** Precommits this miner's commitment to `text` (session, task, miner, result hash), signed. */
  async precommit(sid: string, tid: string, text: string, opts: { signer?: PrivateKeyAccount } = {}): Promise<void> {
    const hash = commitmentHash({ session: sid, task: tid, miner: this.account.address, result: resultHash(text) });
    const signature = await this.sign(sid, tid, hash, opts.signer);
    this.send(sid, { type: "precommit", task_id: tid, hash, signature });
  }

  commit(sid: string, tid: string, text: string, extra: Partial<Omit<Commit, "type" | "task_id" | "text">> = {}): void {
    const a = this.assigns.find((x) => x.sid === sid && x.task_id === tid);
    const usage = extra.usage ?? (a ? (this.opts.usage ?? defaultUsage)(a, text) : { prompt_tokens: 1, completion_tokens: 1 });
    // A verified task's commit carries its token ids (verify-round.ts checks their count against the usage).
    const ids =
      extra.token_ids ?? (a?.params.verify ? (this.opts.tokenIds ?? charIds)(a, text).slice(0, usage.completion_tokens) : undefined);
    this.send(sid, {
      type: "commit",
      task_id: tid,
      text,
      finish_reason: extra.finish_reason ?? this.opts.finishReason ?? "stop",
      usage,
      inference_ms: extra.inference_ms ?? 5,
      ...(ids ? { token_ids: ids } : {}),
    });
  }

  release(sid: string, tid: string, reason = "test release"): void {
    this.send(sid, { type: "release", task_id: tid, reason });
  }

  /** The text this miner commits for an assign. */
  textFor(a: AssignMessage): string {
    return (this.opts.text ?? defaultText)(a);
  }

  /** Delivers a held result (behaviour `hold`). */
  async finish(sid: string, tid: string): Promise<void> {
    const go = this.held.get(`${sid}/${tid}`);
    if (!go) throw new Error(`nothing held for ${sid}/${tid}`);
    this.held.delete(`${sid}/${tid}`);
    await go();
  }

  // ── behaviour ──────────────────────────────────────────────────────────────────────────────────────

  private onSessionMessage(sid: string, ws: WebSocket, raw: string): void {
    const msg = parseMessage(SessionServerMessage, raw);
    if (!msg) {
      this.errors.push(`bad session frame ${raw}`);
      return;
    }
    const list = this.received.get(sid) ?? [];
    list.push(msg);
    this.received.set(sid, list);
    if (msg.type === "cancel") this.cancelled.add(`${sid}/${msg.task_id}`);
    if (msg.type === "embed") {
      const reply = this.opts.embed?.(msg);
      if (reply) this.send(sid, reply);
      return;
    }
    if (msg.type === "verify") {
      const reply = this.opts.verify?.(msg);
      if (reply) this.send(sid, reply);
      return;
    }
    if (msg.type !== "assign") return;
    if (this.assigns.some((a) => a.sid === sid && a.task_id === msg.task_id)) {
      // Re-sent (after a reconnect, or by a restored object that lost the ack): re-ack, as the real agent does.
      this.repeats.push({ ...msg, sid });
      if (this.acked.has(`${sid}/${msg.task_id}`) && !this.cancelled.has(`${sid}/${msg.task_id}`)) this.ack(sid, msg.task_id);
      return;
    }
    this.assigns.push({ ...msg, sid });
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    this.run(sid, ws, msg)
      .catch((err) => this.errors.push(err))
      .finally(() => this.inflight--);
  }

  private async pause(): Promise<void> {
    if (this.delayMs > 0) await sleep(this.delayMs);
  }

  private live(sid: string, tid: string, ws: WebSocket): boolean {
    return !this.cancelled.has(`${sid}/${tid}`) && this.sockets.get(sid) === ws;
  }

  private async run(sid: string, ws: WebSocket, a: AssignMessage): Promise<void> {
    const tid = a.task_id;
    const behaviour = this.behaviour;
    if (behaviour === "manual" || behaviour === "never_ack") return;
    await this.pause();
    if (!this.live(sid, tid, ws)) return;
    this.ack(sid, tid);
    if (behaviour === "release") {
      await this.pause();
      return this.release(sid, tid, "test miner hands the task back");
    }
    if (behaviour === "disconnect_after_ack") {
      await this.pause();
      return this.leave(sid, 1001);
    }
    const text = this.textFor(a);
    const deliver = async () => {
      if (a.stream) {
        for (const [seq, piece] of (this.opts.chunks ?? defaultChunks)(text).entries()) {
          if (!this.live(sid, tid, ws)) return;
          this.send(sid, { type: "token", task_id: tid, seq, text: piece });
          await this.pause();
        }
      }
      await this.pause();
      const other = behaviour === "bad_signature" ? privateKeyToAccount(generatePrivateKey()) : undefined;
      if (!this.live(sid, tid, ws)) return;
      await this.precommit(sid, tid, text, { signer: other });
      await this.pause();
      if (this.cancelled.has(`${sid}/${tid}`)) return;
      this.commit(sid, tid, behaviour === "commit_mismatch" ? `${text} (tampered)` : text);
    };
    if (behaviour === "hold") {
      this.held.set(`${sid}/${tid}`, deliver);
      return;
    }
    if (behaviour === "hold_commit") {
      await this.precommit(sid, tid, text);
      this.held.set(`${sid}/${tid}`, async () => void (this.cancelled.has(`${sid}/${tid}`) || this.commit(sid, tid, text)));
      return;
    }
    await deliver();
  }
}

/** Miners started by a test; `closeAll` in afterEach so no socket outlives its test. */
export class MinerSet {
  readonly all: TestMiner[] = [];
  async start(opts: MinerOptions): Promise<TestMiner> {
    const m = await TestMiner.start(opts);
    this.all.push(m);
    return m;
  }
  /**
   * Closes every socket, then waits until the pool has seen them go (so no Durable Object is still handling
   * a close when the test file's environment is torn down).
   */
  async closeAll(): Promise<void> {
    const closed = this.all.splice(0);
    for (const m of closed) {
      try {
        m.close();
      } catch {
        // already closed
      }
    }
    if (closed.length === 0) return;
    const addresses = new Set(closed.filter((m) => m.reg).map((m) => m.address));
    await waitFor(
      async () => {
        const res = await api("GET", "/miners");
        const { nodes } = await json<{ nodes: { address: string; status: string }[] }>(res);
        return nodes.every((n) => !addresses.has(n.address) || n.status === "offline");
      },
      "closed miners to show offline",
      5_000,
    );
  }
}
