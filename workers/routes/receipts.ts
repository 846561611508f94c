import { Hono } from "hono";
import { z } from "zod";
import { usageMeter } from "../../durable-objects/stubs.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { receiptKey } from "../lib/receipts.ts";
import { params } from "../lib/request-validation.ts";

// GET /api/v1/receipts/:requestId: a receipt again, as the answer carried it (lib/receipts.ts). Receipts are stored
// by their owner's UsageMeter (durable-objects/receipt-store.ts), so a key asks only its owner's meter; receipts
// stored before the meter kept them (and those whose batch failed) are read from the owner's legacy R2 key. Another
// owner's, an unknown id and one past retention (PAYLOAD_RETENTION_S) all answer 404 `not_found` alike, revealing
// nothing about whose it was.

export const receipts = new Hono<AppEnv>();

/** Request ids are the router's own UUIDs (middleware/request-id.ts). */
const ReceiptParam = z.object({ requestId: z.uuid("request ids are UUIDs (the X-Request-ID of the answer)") });

receipts.get("/:requestId", params(ReceiptParam), async (c) => {
  const id = c.req.valid("param").requestId.toLowerCase();
  const owner = c.get("owner");
  const stored = await usageMeter(c.env, owner).receipt(id);
  if (stored !== null) return c.body(stored, 200, { "content-type": "application/json" });
  const key = receiptKey(owner, id);
  const object = await c.env.PAYLOADS.get(key);
  const retentionMs = (Number(c.env.PAYLOAD_RETENTION_S) || 604_800) * 1000;
  const issuedAt = Number(object?.customMetadata?.issued_at ?? 0);
  if (object && Date.now() - issuedAt > retentionMs) {
    await object.body.cancel();
    c.executionCtx.waitUntil(c.env.PAYLOADS.delete(key));
  } else if (object) {
    return c.body(object.body, 200, { "content-type": "application/json" });
  }
  throw new ApiError("not_found", `no receipt ${c.req.valid("param").requestId}`);
});
