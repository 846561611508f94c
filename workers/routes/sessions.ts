import { Hono } from "hono";
import { z } from "zod";
import { depositsOf } from "../../durable-objects/session-queue/config.ts";
import { nodePool } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { chainDeposit, x402Deposit } from "../lib/deposits.ts";
import { jsonBody, params, query } from "../lib/request-validation.ts";
import { CreateSessionBody, PageQuery, SessionParam } from "../lib/schemas.ts";
import { createSession } from "../lib/sessions.ts";
import { catalogQueue, sessionsSeenBy } from "../lib/tenancy.ts";

// Sessions as the caller may see them (lib/tenancy.ts): its own and the shared ones; another owner's read as unknown.

export const sessions = new Hono<AppEnv>();

/** GET /sessions?limit=&before=: newest first, `limit` (1–500, default 100) a page; `before` is the previous page's `next_before`. */
sessions.get("/", query(PageQuery), async (c) => {
  const { limit, before } = c.req.valid("query");
  const page = await nodePool(c.env).listSessions(c.get("owner"), limit, before);
  const list = sessionsSeenBy(page.sessions, c.get("owner"));
  return c.json({ count: list.length, sessions: list, next_before: page.next_before });
});

sessions.post("/", jsonBody(CreateSessionBody), async (c) => {
  const config = await createSession(c.env, c.get("owner"), c.req.valid("json"));
  const summary = await nodePool(c.env).getSession(config.id);
  return c.json({ ...summary, config }, 201);
});

sessions.get("/:sessionId", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  const detail = await (await catalogQueue(c.env, sessionId))?.describe(c.get("owner"));
  const summary = detail ? await nodePool(c.env).getSession(sessionId) : null;
  if (!summary || !detail) throw new ApiError("session_not_found", `unknown session ${sessionId}`);
  return c.json({ ...summary, config: detail.config, usage: detail.usage, deposits: depositsOf(detail.config) });
});

/**
 * A paid deposit: `tx_hash` of a tUSD transfer to the router with its payer's `signature` of Deposit {session, tx}, or
 * `amount` (tUSD base units) paid with x402 (lib/deposits.ts). `signature` is optional here only so that its absence
 * gets lib/deposits.ts's explanation (a union's failure names no field); a chain deposit without one is refused.
 */
const DepositBody = z.union([
  z.strictObject({
    tx_hash: z.string().regex(/^0x[0-9a-fA-F]{64}$/, "a 32-byte transaction hash"),
    signature: z
      .string()
      .regex(/^0x[0-9a-fA-F]{128}([0-9a-fA-F]{2})?$/, "a 65-byte (or 64-byte compact) hex signature")
      .optional()
      .describe("Required: the payer's EIP-712 signature of Deposit {session, tx} under GET /api/v1/info's receipt_domain"),
  }),
  z.strictObject({ amount: z.union([z.string().regex(/^[1-9]\d{0,20}$/), z.number().int().positive().max(Number.MAX_SAFE_INTEGER)]) }),
]);

sessions.post("/:sessionId/deposits", params(SessionParam), jsonBody(DepositBody), async (c) => {
  const { sessionId } = c.req.valid("param");
  const body = c.req.valid("json");
  const paid =
    "tx_hash" in body
      ? await chainDeposit(c, sessionId, body.tx_hash as `0x${string}`, body.signature)
      : await x402Deposit(c, sessionId, BigInt(body.amount));
  return c.json({ session_id: sessionId, deposit: paid.entry, total: paid.config.deposit, deposits: depositsOf(paid.config) }, 201);
});
