import WebSocket from "ws";
import { Backoff, formatDelay, sleep } from "./backoff.ts";
import { describeError, type Logger } from "./log.ts";

// A WebSocket that keeps itself connected: the pool channel and every session channel are one of these.
// It fetches a bearer token before each attempt, reconnects with backoff + jitter, turns a 401 upgrade answer
// into a re-registration, and pings so a half-open TCP connection (router host gone) is noticed.

export interface TokenSource {
  token(): Promise<string>;
  invalidate(token: string): void;
}

export interface SocketHandlers {
  onOpen?(): void;
  onMessage(text: string): void;
  /** After an open connection closes (not called for failed connection attempts). */
  onClose?(code: number, reason: string): void;
}

export interface ReconnectingSocketOptions {
  /** For log lines: "pool", "session abc". */
  name: string;
  url: string;
  tokens: TokenSource;
  log: Logger;
  handlers: SocketHandlers;
  backoff?: Backoff;
  pingIntervalMs?: number;
  handshakeTimeoutMs?: number;
}

interface AttemptOutcome {
  opened: boolean;
  status?: number;
  body?: string;
  code: number;
  reason: string;
  error?: string;
}

/** Close code the router may use to say "your token is no longer valid". */
export const CLOSE_UNAUTHORIZED = 4401;

export class ReconnectingSocket {
  readonly name: string;
  readonly url: string;
  readonly #opts: ReconnectingSocketOptions;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  #ws: WebSocket | null = null;
  #loop: Promise<void> | null = null;

  constructor(opts: ReconnectingSocketOptions) {
    this.name = opts.name;
    this.url = opts.url;
    this.#opts = opts;
    this.#backoff = opts.backoff ?? new Backoff();
  }

  get isOpen(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** The server greeted us properly: the next failure starts backing off from the smallest delay again. */
  markHealthy(): void {
    this.#backoff.reset();
  }

  /** Sends one text frame; false when not connected. `done` learns whether it reached the socket. */
  send(data: string, done?: (err?: Error) => void): boolean {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(data, (err) => done?.(err ?? undefined));
    return true;
  }

  /** Stops reconnecting and closes cleanly (close frame with `code`), forcing it after `timeoutMs`. */
  async close(code = 1000, reason = "", timeoutMs = 2_000): Promise<void> {
    this.#stop.abort();
    const ws = this.#ws;
    if (ws) {
      const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
      if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
      else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      const timer = setTimeout(() => ws.terminate(), timeoutMs);
      if (ws.readyState !== WebSocket.CLOSED) await closed;
      clearTimeout(timer);
    }
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { log, tokens, name } = this.#opts;
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      let token: string;
      try {
        token = await tokens.token();
      } catch {
        return; // registration was stopped: we are shutting down
      }
      if (signal.aborted) return;
      const out = await this.#attempt(token);
      if (signal.aborted) return;
      if (out.status === 401 || out.code === CLOSE_UNAUTHORIZED) tokens.invalidate(token);
      const delay = this.#backoff.next();
      if (out.opened) {
        log.warn(`${name}: connection closed (${out.code}${out.reason ? ` ${out.reason}` : ""}); reconnecting in ${formatDelay(delay)}`);
      } else {
        const why = out.status ? `HTTP ${out.status}${summarizeBody(out.body)}` : (out.error ?? `close ${out.code}`);
        log.warn(`${name}: connect failed (${why}); retry ${this.#backoff.attempts} in ${formatDelay(delay)}`);
      }
      await sleep(delay, signal);
    }
  }

  #attempt(token: string): Promise<AttemptOutcome> {
    const { handlers, log, name } = this.#opts;
    const pingMs = this.#opts.pingIntervalMs ?? 15_000;
    return new Promise((resolve) => {
      const ws = new WebSocket(this.url, {
        headers: { authorization: `Bearer ${token}` },
        handshakeTimeout: this.#opts.handshakeTimeoutMs ?? 10_000,
        perMessageDeflate: false,
      });
      this.#ws = ws;
      const out: AttemptOutcome = { opened: false, code: 1006, reason: "" };
      let lastSeen = Date.now();
      let pingTimer: NodeJS.Timeout | undefined;

      // A refused upgrade: keep its status (401 → re-register) and a bit of its body for the log line.
      ws.on("unexpected-response", (_req, res) => {
        out.status = res.statusCode;
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (body.length < 2_000) body += chunk;
        });
        const finish = () => {
          out.body = body;
          ws.terminate();
        };
        res.once("end", finish);
        res.once("error", finish);
        setTimeout(finish, 2_000).unref();
      });
      ws.on("open", () => {
        out.opened = true;
        lastSeen = Date.now();
        pingTimer = setInterval(() => {
          if (Date.now() - lastSeen > pingMs * 3) {
            log.warn(`${name}: no traffic for ${Math.round((Date.now() - lastSeen) / 1000)} s; dropping the connection`);
            ws.terminate();
            return;
          }
          ws.ping();
        }, pingMs);
        pingTimer.unref();
        handlers.onOpen?.();
      });
      ws.on("pong", () => {
        lastSeen = Date.now();
      });
      ws.on("message", (data, isBinary) => {
        lastSeen = Date.now();
        if (isBinary) {
          log.warn(`${name}: ignoring a binary frame (the protocol is JSON text)`);
          return;
        }
        try {
          handlers.onMessage(data.toString());
        } catch (err) {
          log.error(`${name}: message handler failed: ${describeError(err)}`);
        }
      });
      ws.on("error", (err) => {
        out.error ??= describeError(err);
      });
      ws.on("close", (code, reason) => {
        clearInterval(pingTimer);
        if (this.#ws === ws) this.#ws = null;
        out.code = code;
        out.reason = reason.toString();
        if (out.opened) {
          try {
            handlers.onClose?.(code, out.reason);
          } catch (err) {
            log.error(`${name}: close handler failed: ${describeError(err)}`);
          }
        }
        resolve(out);
      });
    });
  }
}

/** The router's JSON error envelope, condensed to its code and message. */
function summarizeBody(body: string | undefined): string {
  if (!body) return "";
  try {
    const env = JSON.parse(body) as { error?: { code?: string; message?: string }; request_id?: string };
    if (env.error) return ` ${env.error.code ?? ""}: ${env.error.message ?? ""}`.trimEnd();
  } catch {
    /* not JSON */
  }
  return ` ${body.slice(0, 120).replace(/\s+/g, " ")}`;
}
