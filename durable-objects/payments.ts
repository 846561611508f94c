import { DurableObject } from "cloudflare:workers";
import type { PaymentPayload, PaymentRequirements, SettleResponse } from "@x402/core/types";
import { type FacilitatorTarget, facilitatorFor } from "./payments-facilitator.ts";

// The router's payments ledger, one object (`payments(env)` in stubs.ts), in SQLite so that it survives eviction:
// - x402 authorizations by (asset, payer, nonce): reserved while their request works, settled with the tx hash. A
//   replay (the same authorization again, even before its first settlement lands on chain) is refused here.
// - on-chain deposit transactions by hash: each credits one session once. Every x402 settlement is claimed here too
//   (kind 'x402', session `x402:<authorization id>`), so its hash cannot be posted as a chain deposit and credit the
//   same money again; only an x402 deposit whose session vanished gives its settlement back to its payer (claimable).
// - settlement itself: every x402 settlement runs here, one at a time, so the facilitator account's transaction
//   nonces never race (an in-process facilitator sends from one account; parallel sends would clash).

/** How long an authorization's row is kept: longer than any authorization is valid (X402_MAX_TIMEOUT_S). */
export const AUTHORIZATION_ROW_TTL_MS = 24 * 3600_000;
/**
 * How long an x402 settlement's claim is kept. Past it, nothing is lost: a chain deposit must be a transfer its
 * signer sent, and a settlement is sent by the facilitator, so its hash is refused as relayed without the row. What
 * goes is a settlement given back to its payer (its session vanished) and not claimed again within this time.
 */
export const SETTLEMENT_ROW_TTL_MS = 30 * 86_400_000;

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

/**
 * A claim's outcome: refused when the hash was claimed before (a chain deposit, or an x402 settlement not given back
 * to this payer), or, for a transfer someone else sent (`relayed`: an x402 settlement in flight), when nothing here
 * made it claimable.
 */
export type DepositClaim =
  | { ok: true }
  | { ok: false; reason: "claimed"; session_id: string; kind: DepositKind; at: number }
  | { ok: false; reason: "relayed" };

/** chain: a transfer posted as `{tx_hash}`; x402: an x402 settlement (a per-request payment or an x402 deposit). */
export type DepositKind = "chain" | "x402";

export type DepositRow = {
  tx: string;
  session_id: string;
  amount: string;
  at: number;
  kind: DepositKind;
  payer: string | null;
  /** 1: an x402 deposit's settlement given back to its payer (its session vanished); `payer` may claim it once. */
  claimable: number;
};

/** Columns added to `deposits` after its first version (additive: existing rows read as chain deposits). */
const DEPOSIT_COLUMNS = [
  ["kind", "kind TEXT NOT NULL DEFAULT 'chain'"],
  ["payer", "payer TEXT"],
  ["claimable", "claimable INTEGER NOT NULL DEFAULT 0"],
] as const;

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
    const have = new Set(
      this.sql
        .exec<{ name: string }>("SELECT name FROM pragma_table_info('deposits')")
        .toArray()
        .map((c) => c.name),
    );
    for (const [name, column] of DEPOSIT_COLUMNS) if (!have.has(name)) this.sql.exec(`ALTER TABLE deposits ADD COLUMN ${column}`);
    this.sql.exec("CREATE INDEX IF NOT EXISTS deposits_x402_at ON deposits (at) WHERE kind = 'x402'");
  }

  /** Holds an authorization for one request; refused when it is held or was settled already. */
  reserve(id: string, amount: string, now: number = Date.now()): Reserved {
    // Rows past any authorization's life are dropped: the token refuses an expired or used one by itself, and a
    // hold left by a request that died mid-work frees its authorization (X402_MAX_TIMEOUT_S is far shorter).
    this.sql.exec("DELETE FROM authorizations WHERE at < ?", now - AUTHORIZATION_ROW_TTL_MS);
    // One row per paid request would otherwise grow this one object for ever (SETTLEMENT_ROW_TTL_MS says why it may go).
    this.sql.exec("DELETE FROM deposits WHERE kind = 'x402' AND at < ?", now - SETTLEMENT_ROW_TTL_MS);
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
      if (res.success) this.settled(id, res, requirements.amount);
      else this.release(id);
      return res;
    };
    const next = this.tail.then(run, run);
    this.tail = next.catch(() => undefined);
    return next;
  }

  /** A successful settlement: its authorization settled, and its transaction claimed so no chain deposit credits it. */
  private settled(id: string, res: Settled, amount: string): void {
    const now = Date.now();
    const tx = res.transaction.toLowerCase();
    const payer = (res.payer ?? id.split(":")[1] ?? "").toLowerCase() || null;
    this.sql.exec("UPDATE authorizations SET state = 'settled', tx = ?, at = ? WHERE id = ?", res.transaction, now, id);
    this.sql.exec(
      `INSERT INTO deposits (tx, session_id, amount, at, kind, payer, claimable) VALUES (?, ?, ?, ?, 'x402', ?, 0)
       ON CONFLICT (tx) DO NOTHING`,
      tx,
      `x402:${id}`,
      res.amount ?? amount,
      now,
      payer,
    );
  }

  /** Where an authorization stands (tests, diagnostics). */
  authorization(id: string): { state: string; tx: string | null; amount: string | null } | null {
    return (
      this.sql
        .exec<{ state: string; tx: string | null; amount: string | null }>("SELECT state, tx, amount FROM authorizations WHERE id = ?", id)
        .toArray()[0] ?? null
    );
  }

  /** A transaction's row (tests, diagnostics). */
  deposit(tx: string): DepositRow | null {
    return this.sql.exec<DepositRow>("SELECT * FROM deposits WHERE tx = ?", tx.toLowerCase()).toArray()[0] ?? null;
  }

  /**
   * Claims a deposit transaction for a session, paid by `payer` (who signed the claim): each hash credits once. A
   * settlement given back to its payer (claimable) is taken over by that payer alone. A transfer that `payer` did
   * not send itself (`relayed`: an x402 settlement is sent by the facilitator) is refused unless it was given back:
   * this also covers a settlement still in flight, whose row is written when the facilitator answers.
   */
  claimDeposit(tx: string, sessionId: string, amount: string, payer: string, relayed = false): DepositClaim {
    const row = this.deposit(tx);
    const who = payer.toLowerCase();
    if (row?.claimable && row.payer === who) {
      this.sql.exec("UPDATE deposits SET session_id = ?, claimable = 0, at = ? WHERE tx = ?", sessionId, Date.now(), row.tx);
      return { ok: true };
    }
    if (row) return { ok: false, reason: "claimed", session_id: row.session_id, kind: row.kind, at: row.at };
    if (relayed) return { ok: false, reason: "relayed" };
    this.sql.exec(
      "INSERT INTO deposits (tx, session_id, amount, at, kind, payer, claimable) VALUES (?, ?, ?, ?, 'chain', ?, 0)",
      tx.toLowerCase(),
      sessionId,
      amount,
      Date.now(),
      who,
    );
    return { ok: true };
  }

  /**
   * Gives a claimed transaction back when crediting its session failed: a chain transfer's claim is dropped (its
   * payer may post it again); an x402 settlement stays claimed, but claimable by its payer. Only deposits call
   * this: a per-request payment's settlement is never given back.
   */
  unclaimDeposit(tx: string): void {
    const row = this.deposit(tx);
    if (row?.kind === "x402") this.sql.exec("UPDATE deposits SET claimable = 1, at = ? WHERE tx = ?", Date.now(), row.tx);
    else if (row) this.sql.exec("DELETE FROM deposits WHERE tx = ?", row.tx);
  }
}
