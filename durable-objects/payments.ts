import { DurableObject } from "cloudflare:workers";
import type { PaymentPayload, PaymentRequirements, SettleResponse } from "@x402/core/types";
import { type FacilitatorTarget, facilitatorFor } from "./payments-facilitator.ts";

// The router's payments ledger, one object (`payments(env)` in stubs.ts), in SQLite so that it survives eviction:
// - x402 authorizations by (asset, payer, nonce): reserved while their request works, settled with the tx hash. A
//   replay (the same authorization again, even before its first settlement lands on chain) is refused here.
// - on-chain deposit transactions by hash: each credits one session once.
// - settlement itself: every x402 settlement runs here, one at a time, so the facilitator account's transaction
//   nonces never race (an in-process facilitator sends from one account; parallel sends would clash).

/** How long an authorization's row is kept: longer than any authorization is valid (X402_MAX_TIMEOUT_S). */
export const AUTHORIZATION_ROW_TTL_MS = 24 * 3600_000;

export type Reserved = { ok: true } | { ok: false; state: "reserved" | "settled"; transaction: string | null };

/** A settlement's outcome as it crosses RPC (x402's SettleResponse without its free-form extension fields). */
export interface Settled {
  success: boolean;
  transaction: string;
  network: `${string}:${string}`;
  payer?: string;
  amount?: string;
  errorReason?: string;
  errorMessage?: string;
}

const settled = (r: SettleResponse): Settled => ({
  success: r.success,
  transaction: r.transaction,
  network: r.network,
  ...(r.payer ? { payer: r.payer } : {}),
  ...(r.amount ? { amount: r.amount } : {}),
  ...(r.errorReason ? { errorReason: r.errorReason } : {}),
  ...(r.errorMessage ? { errorMessage: r.errorMessage.slice(0, 500) } : {}),
});

export type DepositClaim = { ok: true } | { ok: false; session_id: string; at: number };

export class Payments extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** The settlement queue: each settlement starts after the previous one finished (input gates do not hold across fetch). */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS authorizations (
      id TEXT PRIMARY KEY, state TEXT NOT NULL, tx TEXT, amount TEXT, at INTEGER NOT NULL)`);
    this.sql.exec("CREATE INDEX IF NOT EXISTS authorizations_at ON authorizations (at)");
    this.sql.exec(`CREATE TABLE IF NOT EXISTS deposits (
      tx TEXT PRIMARY KEY, session_id TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL)`);
  }

  /** Holds an authorization for one request; refused when it is held or was settled already. */
  reserve(id: string, amount: string, now: number = Date.now()): Reserved {
    // Rows past any authorization's life are dropped: the token refuses an expired or used one by itself, and a
    // hold left by a request that died mid-work frees its authorization (X402_MAX_TIMEOUT_S is far shorter).
    this.sql.exec("DELETE FROM authorizations WHERE at < ?", now - AUTHORIZATION_ROW_TTL_MS);
    const row = this.sql.exec<{ state: string; tx: string | null }>("SELECT state, tx FROM authorizations WHERE id = ?", id).toArray()[0];
    if (row) return { ok: false, state: row.state as "reserved" | "settled", transaction: row.tx };
    this.sql.exec("INSERT INTO authorizations (id, state, tx, amount, at) VALUES (?, 'reserved', NULL, ?, ?)", id, amount, now);
    return { ok: true };
  }

  /** Gives back an authorization whose request failed: nothing was settled, the payer may use it again. */
  release(id: string): void {
    this.sql.exec("DELETE FROM authorizations WHERE id = ? AND state = 'reserved'", id);
  }

  /**
   * Settles a reserved authorization, after every settlement queued before it. Success marks it settled with its
   * transaction; a failure releases it (nothing moved on chain, or the facilitator said so).
   */
  settle(id: string, target: FacilitatorTarget, payload: PaymentPayload, requirements: PaymentRequirements): Promise<Settled> {
    const run = async (): Promise<Settled> => {
      let res: Settled;
      try {
        res = settled(await facilitatorFor(target, this.env).settle(payload, requirements));
      } catch (err) {
        res = {
          success: false,
          errorReason: "facilitator_error",
          errorMessage: String(err),
          transaction: "",
          network: requirements.network,
        };
      }
      if (res.success)
        this.sql.exec("UPDATE authorizations SET state = 'settled', tx = ?, at = ? WHERE id = ?", res.transaction, Date.now(), id);
      else this.release(id);
      return res;
    };
    const next = this.tail.then(run, run);
    this.tail = next.catch(() => undefined);
    return next;
  }

  /** Where an authorization stands (tests, diagnostics). */
  authorization(id: string): { state: string; tx: string | null; amount: string | null } | null {
    return (
      this.sql
        .exec<{ state: string; tx: string | null; amount: string | null }>("SELECT state, tx, amount FROM authorizations WHERE id = ?", id)
        .toArray()[0] ?? null
    );
  }

  /** Claims an on-chain deposit transaction for a session: each hash credits once. */
  claimDeposit(tx: string, sessionId: string, amount: string): DepositClaim {
    const row = this.sql.exec<{ session_id: string; at: number }>("SELECT session_id, at FROM deposits WHERE tx = ?", tx).toArray()[0];
    if (row) return { ok: false, session_id: row.session_id, at: row.at };
    this.sql.exec("INSERT INTO deposits (tx, session_id, amount, at) VALUES (?, ?, ?, ?)", tx, sessionId, amount, Date.now());
    return { ok: true };
  }

  /** Gives a claimed transaction back when crediting the session failed. */
  unclaimDeposit(tx: string): void {
    this.sql.exec("DELETE FROM deposits WHERE tx = ?", tx);
  }
}
