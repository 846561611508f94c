// The in-process requests routes/x402.ts makes after a payment was verified: middleware/auth.ts lets exactly
// these through as X402_OWNER (like trial's, lib/trial.ts). Only Request objects the router made can be members;
// no header or body a client sends can forge one.

const paidRequests = new WeakMap<Request, string>();

/** Marks `req` as paid by `payer` (a verified, held x402 payment). */
export function markPaid(req: Request, payer: string): Request {
  paidRequests.set(req, payer);
  return req;
}

/** The payer of an in-process paid request, else undefined. */
export const paidBy = (req: Request): string | undefined => paidRequests.get(req);
