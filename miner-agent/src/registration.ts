import type { PrivateKeyAccount } from "viem/accounts";
import type { MinerRegisterResponse } from "../../shared/api.ts";
import { Backoff, formatDelay, sleep } from "./backoff.ts";
import { describeError, type Logger } from "./log.ts";
import { type RegistrationInfo, type RouterClient, RouterError, registerMiner } from "./router-client.ts";

// Holds the miner's bearer token. Every socket asks it for a token before connecting; a 401 on any socket
// invalidates the token and the next ask re-registers — once, however many sockets were refused together.
// The token is also renewed ahead of its expiry so reconnects never start with a stale one.

const EXPIRY_MARGIN_MS = 5_000;

export interface RegistrationOptions {
  client: RouterClient;
  account: PrivateKeyAccount;
  info: RegistrationInfo;
  log: Logger;
  backoff?: Backoff;
  /** Called after every successful (re-)registration. */
  onRegistered?: (res: MinerRegisterResponse) => void;
}

export class Registration {
  readonly #opts: RegistrationOptions;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  #current: MinerRegisterResponse | null = null;
  #expiresAtMs = 0;
  #inflight: Promise<string> | null = null;
  #renewTimer: NodeJS.Timeout | undefined;

  constructor(opts: RegistrationOptions) {
    this.#opts = opts;
    this.#backoff = opts.backoff ?? new Backoff();
  }

  get current(): MinerRegisterResponse | null {
    return this.#current;
  }

  get stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  /**
   * First registration at startup: retries while the router is unreachable or failing, but gives up on
   * answers that retrying cannot change (bad request, refused challenge) so a misconfiguration fails fast.
   */
  async start(signal?: AbortSignal): Promise<MinerRegisterResponse> {
    if (signal) signal.addEventListener("abort", () => this.stop(), { once: true });
    await this.#ensure(true);
    if (!this.#current) throw new Error("registration stopped");
    return this.#current;
  }

  /** A usable token, registering (with retries) when there is none or it is about to expire. */
  token(): Promise<string> {
    if (this.#current && Date.now() < this.#expiresAtMs - EXPIRY_MARGIN_MS) return Promise.resolve(this.#current.token);
    return this.#ensure(false);
  }

  /** A socket was refused with this token; forget it (unless a newer one already replaced it). */
  invalidate(token: string): void {
    if (this.#current?.token === token) {
      this.#opts.log.info("router refused the token (401); registering again");
      this.#current = null;
      this.#expiresAtMs = 0;
    }
  }

  stop(): void {
    this.#stop.abort();
    clearTimeout(this.#renewTimer);
  }

  #ensure(fatalOnPermanent: boolean): Promise<string> {
    this.#inflight ??= this.#registerLoop(fatalOnPermanent).finally(() => {
      this.#inflight = null;
    });
    return this.#inflight;
  }

  async #registerLoop(fatalOnPermanent: boolean): Promise<string> {
    const { client, account, info, log } = this.#opts;
    const signal = this.#stop.signal;
    for (;;) {
      if (signal.aborted) throw new Error("registration stopped");
      try {
        const res = await registerMiner(client, account, info, signal);
        this.#current = res;
        this.#expiresAtMs = toEpochMs(res.expires_at);
        this.#backoff.reset();
        this.#scheduleRenewal();
        this.#opts.onRegistered?.(res);
        return res.token;
      } catch (err) {
        if (signal.aborted) throw new Error("registration stopped");
        const permanent = err instanceof RouterError && !err.retryable;
        if (permanent && fatalOnPermanent) throw err;
        const delay = permanent ? this.#backoff.maxMs : this.#backoff.next();
        log.warn(`register: ${describeError(err)}; retry ${this.#backoff.attempts} in ${formatDelay(delay)}`, {
          code: err instanceof RouterError ? err.code : undefined,
          status: err instanceof RouterError ? err.status : undefined,
          request_id: err instanceof RouterError ? err.requestId : undefined,
        });
        await sleep(delay, signal);
      }
    }
  }

  #scheduleRenewal(): void {
    clearTimeout(this.#renewTimer);
    const remaining = this.#expiresAtMs - Date.now();
    if (!Number.isFinite(remaining)) return;
    // Renew at ~80 % of the lifetime (at least a second from now) so the token never lapses between reconnects.
    const delay = Math.max(1_000, remaining * 0.8);
    this.#renewTimer = setTimeout(
      () => {
        const stale = this.#current?.token;
        this.#ensure(false).then(
          () => this.#opts.log.info("registration renewed", { previous_token_replaced: stale !== this.#current?.token }),
          () => {},
        );
      },
      Math.min(delay, 2 ** 31 - 1),
    );
    this.#renewTimer.unref();
  }
}

/** `expires_at` is epoch ms; a value that can only be epoch seconds is accepted too. */
export function toEpochMs(t: number): number {
  return t > 0 && t < 1e11 ? t * 1000 : t;
}
