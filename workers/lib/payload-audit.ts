import { catalogQueue } from "./tenancy.ts";

// Audit rows of refused payload attempts (a miner asking for a key it may not have, fetching a prompt or writing
// a result of a task it does not hold), kept in R2 for the session's owner (GET /api/v1/auth/payload_audit/:sid)
// and logged. Bounded: rows only for sessions in the catalog (a made-up id leaves nothing), and the session's
// queue admits one row per miner, action and reason class — never per task id — per window, a few per miner at
// most (durable-objects/session-queue/audit-gate.ts); they expire with the session's other objects
// (durable-objects/session-queue/retention.ts). Keys sort newest first:
// `audit/<sid>/<MAX − at, zero-padded>-<random>.json`, so a listing reads the newest rows however many there are,
// and a page ends at a key the next page starts after.

/** Why a refusal happened, without the task it was about: what audit rows are deduplicated on. */
export type AuditClass = "session_not_allowlisted" | "task_not_allowlisted" | "not_holder" | "bad_signature" | `claim_${string}`;

export interface AuditEntry {
  at: number;
  session_id: string;
  task_id: string | null;
  miner: string;
  action: "payload_key" | "payload_fetch" | "result_write";
  class: AuditClass;
  outcome: "refused";
  reason: string;
  request_id: string | null;
}

const TIME_MAX = 10 ** 15;
/** A page cursor: the name of the last row of the previous page. */
export const AUDIT_CURSOR = /^\d{15}-[0-9a-f]{8}\.json$/;

const reverseTime = (at: number) => String(TIME_MAX - at).padStart(15, "0");

/** Logs a refused attempt (one console line) and keeps it as an audit row when the session's queue admits one. */
export async function auditRefusal(env: Env, entry: AuditEntry): Promise<void> {
  console.warn(
    `payload audit: refused ${entry.action} for miner ${entry.miner} on ${entry.session_id}${entry.task_id ? `/${entry.task_id}` : ""}: ${entry.reason} [request ${entry.request_id}]`,
  );
  const queue = await catalogQueue(env, entry.session_id);
  if (!queue) return; // no such session: nothing to keep, nobody to show it to
  if (!(await queue.admitAudit(entry.miner, `${entry.action}:${entry.class}`))) return;
  const key = `audit/${entry.session_id}/${reverseTime(entry.at)}-${crypto.randomUUID().slice(0, 8)}.json`;
  await env.PAYLOADS.put(key, JSON.stringify(entry), { httpMetadata: { contentType: "application/json" } });
}

/** A page of the session's audit rows, newest first, after the row `before` (a previous page's `next_before`). */
export async function listAudit(
  env: Env,
  sessionId: string,
  limit = 100,
  before?: string,
): Promise<{ entries: AuditEntry[]; next_before: string | null }> {
  const prefix = `audit/${sessionId}/`;
  const listed = await env.PAYLOADS.list({
    prefix,
    limit: Math.min(1000, Math.max(1, limit)),
    ...(before ? { startAfter: prefix + before } : {}),
  });
  const rows = await Promise.all(
    listed.objects.map(async (o) => (await (await env.PAYLOADS.get(o.key))?.json()) as AuditEntry | undefined),
  );
  const last = listed.objects.at(-1);
  return {
    entries: rows.filter((r): r is AuditEntry => !!r),
    next_before: listed.truncated && last ? last.key.slice(prefix.length) : null,
  };
}
