import type { Failure } from "../../shared/errors.ts";
import type { SessionConfig } from "../../shared/views.ts";
import type { MinerClaims } from "../miner-sockets.ts";
import { seesSession, sessionNotFound } from "../tenancy.ts";
import type { SubmitRequest } from "./rpc.ts";

// What a session checks before it takes a task: who may use it, which model it serves, and whether its deposit
// covers the most the task can cost.

const encoder = new TextEncoder();

/** Deposit tokens a task may use at most: byte-level tokenizers never make more tokens than bytes. */
export function tokenBound(req: SubmitRequest): number {
  const inline = encoder.encode(req.input.prompt + (req.input.prompt_template ?? "")).length;
  return inline + (req.payload?.prompt_bytes ?? 0) + req.params.max_tokens;
}

/** A session serves its owner; a shared session (owner `*`) serves every key; to anyone else it is unknown. */
export function ownerFailure(config: SessionConfig, owner: string): Failure | null {
  return seesSession(config, owner) ? null : sessionNotFound(config.id);
}

/** Why the session refuses this task before anything is written (owner, model, deposit), or null. */
export function admissionFailure(config: SessionConfig, req: SubmitRequest, deposit: { used: number; reserved: number }): Failure | null {
  const owner = ownerFailure(config, req.owner);
  if (owner) return owner;
  if (req.model && req.model !== config.model) {
    return {
      code: "invalid_request",
      message: `session ${config.id} serves model ${config.model}, not ${req.model}`,
      details: [{ path: "model", message: `expected ${config.model}` }],
    };
  }
  const required = tokenBound(req);
  const available = config.deposit - deposit.used - deposit.reserved;
  if (available >= required) return null;
  return {
    code: "deposit_exhausted",
    message: `session ${config.id} has ${available} tokens available; this task may use up to ${required}`,
    details: { deposit: config.deposit, used: deposit.used, reserved: deposit.reserved, required },
  };
}

/** Whether a miner may serve the session: it runs the session's model and, in a dedicated session, is listed. */
export function mayServe(config: SessionConfig, claims: MinerClaims): boolean {
  return claims.models.includes(config.model) && (config.mode !== "dedicated" || config.dedicated_miners.includes(claims.address));
}
