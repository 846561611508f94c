import {
  FOLDED_COMMIT_PROTOCOL,
  PROTOCOL_VERSION,
  parseMessage,
  type SessionMinerMessage,
  SessionServerMessage,
} from "../../shared/protocol.ts";
import { parseTaskId } from "../../shared/task-id.ts";
import type { Backoff } from "./backoff.ts";
import type { Logger } from "./log.ts";
import type { TaskRunnerApi, TaskSink } from "./task-runner.ts";
import type { ValidatorApi } from "./validator.ts";
import type { VerifyHandler } from "./verifier.ts";
import { ReconnectingSocket, type TokenSource } from "./ws-channel.ts";

// One session channel (miner ↔ that session's SessionQueue). It feeds assigns/cancels to the task runner and
// carries the runner's messages back. Results go through a small outbox: written only once the server has
// welcomed us on the current connection, and kept across reconnects until the socket has taken them.

export interface SessionConnectionOptions {
  sessionId: string;
  model: string;
  url: string;
  address: string;
  engineModel: string;
  tokens: TokenSource;
  runner: TaskRunnerApi;
  /** Answers `embed` requests (similarity consensus); without one they are declined. */
  validator?: ValidatorApi;
  /** Answers `verify` requests (verified sampling: verifier.ts); without one they are declined. */
  verify?: VerifyHandler;
  log: Logger;
  backoff?: Backoff;
  /** Most undelivered messages kept; the oldest go first beyond it. */
  outboxLimit?: number;
}

interface OutboxEntry {
  taskId: string;
  msg: SessionMinerMessage;
  data: string;
  sending: boolean;
}

export class SessionConnection implements TaskSink {
  readonly sessionId: string;
  readonly model: string;
  readonly #opts: SessionConnectionOptions;
  readonly #socket: ReconnectingSocket;
  #outbox: OutboxEntry[] = [];
  #welcomed = false;
  /** The protocol the router's last welcome named (a precommit carries its commit from FOLDED_COMMIT_PROTOCOL on). */
  #routerProtocol = 0;
  #flushQueued = false;
  #everWelcomed = false;
  #closing = false;

  constructor(opts: SessionConnectionOptions) {
    this.#opts = opts;
    this.sessionId = opts.sessionId;
    this.model = opts.model;
    this.#socket = new ReconnectingSocket({
      name: `session ${opts.sessionId}`,
      url: opts.url,
      tokens: opts.tokens,
      log: opts.log,
      backoff: opts.backoff,
      handlers: {
        onMessage: (text) => this.#onMessage(text),
        onClose: () => {
          this.#welcomed = false;
        },
      },
    });
  }

  /** Undelivered messages (the drain waits for this to reach 0). */
  get pending(): number {
    return this.#outbox.length;
  }

  get connected(): boolean {
    return this.#welcomed && this.#socket.isOpen;
  }

  start(): void {
    this.#socket.start();
  }

  async close(reason = "leaving session"): Promise<void> {
    this.#closing = true;
    await this.#socket.close(1000, reason);
    this.#outbox = [];
  }

  // ── TaskSink ──────────────────────────────────────────────────────────────────────────────────────────

  send(msg: SessionMinerMessage): boolean {
    return this.#welcomed && this.#socket.send(JSON.stringify(msg));
  }

  deliver(msg: SessionMinerMessage): void {
    if (this.#closing) return;
    this.#outbox.push({ taskId: msg.task_id, msg, data: JSON.stringify(msg), sending: false });
    const limit = this.#opts.outboxLimit ?? 256;
    if (this.#outbox.length > limit) {
      const dropped = this.#outbox.splice(0, this.#outbox.length - limit);
      this.#opts.log.warn(`session ${this.sessionId}: outbox full; dropped ${dropped.length} undelivered message(s)`);
    }
    // Written after the current turn, so a precommit and the commit delivered right after it go as one frame.
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.#flush();
    });
  }

  hasPending(taskId: string): boolean {
    return this.#outbox.some((e) => e.taskId === taskId);
  }

  dropTask(taskId: string): void {
    this.#outbox = this.#outbox.filter((e) => e.taskId !== taskId);
  }

  // ── internals ─────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Writes what waits, in order; an entry leaves the outbox only when the socket reports it written. A precommit
   * followed by its task's commit goes as one frame (the commit folded in) to a router that takes that.
   */
  #flush(): void {
    if (!this.#welcomed) return;
    const waiting = this.#outbox.filter((e) => !e.sending);
    for (let i = 0; i < waiting.length; i++) {
      const next = waiting[i + 1];
      const frame = this.#folds(waiting[i], next) ? [waiting[i], next] : [waiting[i]];
      const data = frame.length === 2 ? JSON.stringify({ ...waiting[i].msg, commit: next.msg }) : waiting[i].data;
      for (const e of frame) e.sending = true;
      const ok = this.#socket.send(data, (err) => {
        for (const e of frame) {
          if (err)
            e.sending = false; // the connection died under it: resent after the next welcome
          else if (this.#outbox.includes(e)) this.#outbox.splice(this.#outbox.indexOf(e), 1);
        }
      });
      if (!ok) {
        for (const e of frame) e.sending = false;
        return;
      }
      i += frame.length - 1;
    }
  }

  #folds(a: OutboxEntry, b: OutboxEntry | undefined): b is OutboxEntry {
    return (
      this.#routerProtocol >= FOLDED_COMMIT_PROTOCOL &&
      a.msg.type === "precommit" &&
      !a.msg.commit &&
      b?.msg.type === "commit" &&
      b.taskId === a.taskId
    );
  }

  #onMessage(text: string): void {
    const { log, runner } = this.#opts;
    const sid = this.sessionId;
    const msg = parseMessage(SessionServerMessage, text);
    if (!msg) {
      this.#rejectMalformed(text);
      return;
    }
    switch (msg.type) {
      case "welcome": {
        const { address, engineModel } = this.#opts;
        if (msg.session_id !== sid) log.warn(`session ${sid}: welcome names session ${msg.session_id}`);
        if (msg.miner.toLowerCase() !== address.toLowerCase())
          log.warn(`session ${sid}: welcome names miner ${msg.miner}, we are ${address}`);
        // An older router gets its own protocol (two frames, no folding); a newer one may expect what we lack.
        if (msg.protocol > PROTOCOL_VERSION)
          log.warn(`session ${sid}: router speaks protocol ${msg.protocol}, we speak ${PROTOCOL_VERSION}: update the miner agent`);
        if (msg.model !== engineModel) log.warn(`session ${sid}: session model is ${msg.model}, this miner serves ${engineModel}`);
        const reconnect = this.#everWelcomed;
        this.#routerProtocol = msg.protocol;
        this.#welcomed = true;
        this.#everWelcomed = true;
        this.#socket.markHealthy();
        log.event(
          "session_joined",
          reconnect
            ? `session ${sid} reconnected${this.#outbox.length ? `; delivering ${this.#outbox.length} pending message(s)` : ""}`
            : `joined session ${sid} (model ${msg.model}, block ${msg.block})`,
          { session_id: sid, model: msg.model, block: msg.block, reconnect, pending: this.#outbox.length },
        );
        this.#flush();
        return;
      }
      case "assign":
        if (msg.session_id !== sid) {
          log.warn(`session ${sid}: ignoring an assign for session ${msg.session_id} (task ${msg.task_id})`);
          return;
        }
        runner.submit(this, msg);
        return;
      case "cancel":
        runner.cancel(sid, msg.task_id, msg.reason);
        return;
      case "embed": {
        const { validator } = this.#opts;
        if (!validator) {
          this.deliver({ type: "embed_failed", task_id: msg.task_id, reason: "this miner does no validation work" });
          return;
        }
        void validator.handle(msg).then((reply) => this.deliver(reply));
        return;
      }
      case "verify": {
        const { verify } = this.#opts;
        if (!verify || msg.session_id !== sid) {
          this.deliver({ type: "verify_failed", task_id: msg.task_id, reason: "this miner does no verification work here" });
          return;
        }
        void verify(msg).then((reply) => this.deliver(reply));
        return;
      }
      case "error":
        log.warn(`session ${sid}: router error ${msg.code}: ${msg.message}${msg.task_id ? ` (task ${msg.task_id})` : ""}`);
        return;
    }
  }

  /**
   * A frame that fails the schema is logged and dropped. If it still looks like an assign with a task id, the
   * task is released at once, so the router reassigns it instead of waiting for the ack deadline.
   */
  #rejectMalformed(text: string): void {
    const sid = this.sessionId;
    let type: unknown;
    let taskId: unknown;
    try {
      const raw = JSON.parse(text) as { type?: unknown; task_id?: unknown };
      type = raw?.type;
      taskId = raw?.task_id;
    } catch {
      /* not JSON at all */
    }
    this.#opts.log.warn(`session ${sid}: malformed message ignored: ${text.slice(0, 200)}`);
    if (type === "assign" && typeof taskId === "string" && parseTaskId(taskId) !== null) {
      this.deliver({ type: "release", task_id: taskId, reason: "malformed assign message (failed schema validation)" });
    }
  }
}
