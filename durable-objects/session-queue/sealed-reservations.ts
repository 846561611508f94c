import type { Failure } from "../../shared/errors.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { RESERVATION_TTL_MS } from "./open-tasks.ts";

// Task ids reserved by a client that seals its own prompt (POST /api/v1/sessions/:sid/reservations). Each is also
// an ordinary id reservation in OpenTasks (so submit takes it as it takes the router's own); here it is bound to
// a random token only the reserving client was told, so nobody can submit under it (not the router's own
// reservations, not an id reissued after an eviction forgot this memory), and it is usable once. Memory only:
// an unused reservation costs an entry until it lapses (the ids' TTL) and nothing durable; at most
// MAX_OPEN_RESERVATIONS per session are outstanding.

export const MAX_OPEN_RESERVATIONS = 256;

type Reservation = { ok: true; task_id: number; config: SessionConfig } | { ok: false; error: Failure };
export type SealedOutcome = { ok: true; task_id: number; token: string; expires_at: number } | { ok: false; error: Failure };

interface Entry {
  token: string;
  at: number;
}

export class SealedReservations {
  private readonly entries = new Map<number, Entry>();

  /** Drops lapsed entries (in order of reservation: the first young one ends the sweep). */
  private sweep(now: number): void {
    for (const [id, e] of this.entries) {
      if (now - e.at < RESERVATION_TTL_MS) break;
      this.entries.delete(id);
    }
  }

  /** Whether another reservation fits under the cap. */
  hasRoom(now = Date.now()): boolean {
    this.sweep(now);
    return this.entries.size < MAX_OPEN_RESERVATIONS;
  }

  /** Binds `id` (just reserved in OpenTasks) to a fresh token; returns the token and when it lapses (ms). */
  bind(id: number, now = Date.now()): { token: string; expires_at: number } {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    this.entries.set(id, { token, at: now });
    return { token, expires_at: now + RESERVATION_TTL_MS };
  }

  /**
   * Uses the reservation when `token` is its own and it has not lapsed; a wrong token leaves it in place (so a
   * guess burns nothing), a right one removes it, so a second use fails.
   */
  take(id: number, token: string, now = Date.now()): boolean {
    this.sweep(now);
    const e = this.entries.get(id);
    if (!e || !sameToken(e.token, token)) return false;
    this.entries.delete(id);
    return true;
  }

  /** A fresh id from OpenTasks bound to a token, or why not (the id is then given back). */
  reserve(r: Reservation, giveBack: (id: number) => void, now = Date.now()): SealedOutcome {
    if (!r.ok) return r;
    if (r.config.owner === "*" || !this.hasRoom(now)) {
      giveBack(r.task_id);
      return { ok: false, error: sealedRefusal(r.config) };
    }
    return { ok: true, task_id: r.task_id, ...this.bind(r.task_id, now) };
  }

  /** Uses a reservation for a caller the session admits (`refused` null), else says why not. */
  use(refused: Failure | null, id: number, token: string): Failure | null {
    if (refused) return refused;
    if (this.take(id, token)) return null;
    return { code: "conflict", message: `task id ${id} is not reserved for this token (lapsed, used, or never reserved): reserve again` };
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Compares without an early exit on the first differing character. */
function sameToken(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** Why a session gives no sealed reservation: it is shared by every key, or holds the most it may. */
export function sealedRefusal(config: SessionConfig): Failure {
  if (config.owner === "*") {
    return {
      code: "invalid_request",
      message: `session ${config.id} is shared by every API key; private tasks need a session of your own`,
    };
  }
  return {
    code: "rate_limited",
    message: `session ${config.id} holds ${MAX_OPEN_RESERVATIONS} unused reservations; use them or let them lapse`,
    details: { max_open_reservations: MAX_OPEN_RESERVATIONS, retry_after_s: 60 },
  };
}
