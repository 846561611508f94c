import { catalogQueue } from "./tenancy.ts";

// Audit rows of refused payload attempts (a miner asking for a key it may not have, fetching a prompt or writing
// a result of a task it does not hold), kept in R2 for the session's owner (GET /api/v1/auth/payload_audit/:sid)
// and logged. Bounded: rows only for sessions in the catalog (a made-up id leaves nothing), one row per miner,
// action and reason within AUDIT_DEDUP_MS (a marker under `audit-dedup/` says one was written), and they expire
// with the session's other objects (durable-objects/session-queue/retention.ts). Keys sort newest first:
// `audit/<sid>/<MAX − at, zero-padded>-<random>.json`, so a listing reads the newest rows however many there are.

export interface AuditEntry {
  at: number;
  session_id: string;
  task_id: string | null;
  miner: string;
  action: "payload_key" | "payload_fetch" | "result_write";
  outcome: "refused";
  reason: string;
  request_id: string | null;
}

/** One row per (session, miner, action, reason) within this window. */
export const AUDIT_DEDUP_MS = 10 * 60_000;
const TIME_MAX = 10 ** 15;

const reverseTime = (at: number) => String(TIME_MAX - at).padStart(15, "0");

async function digest(text: string): Promise<string> {
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(bytes.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Logs a refused attempt (one console line) and keeps it as an audit row the session owner can list. */
export async function auditRefusal(env: Env, entry: AuditEntry): Promise<void> {
  console.warn(
    `payload audit: refused ${entry.action} for miner ${entry.miner} on ${entry.session_id}${entry.task_id ? `/${entry.task_id}` : ""}: ${entry.reason} [request ${entry.request_id}]`,
  );
  const queue = await catalogQueue(env, entry.session_id);
  if (!queue) return; // no such session: nothing to keep, nobody to show it to
  const marker = `audit-dedup/${entry.session_id}/${await digest(`${entry.miner}\n${entry.action}\n${entry.reason}`)}`;
  const seen = await env.PAYLOADS.head(marker);
  const last = Number(seen?.customMetadata?.at);
  if (seen && entry.at - last < AUDIT_DEDUP_MS) return;
  const key = `audit/${entry.session_id}/${reverseTime(entry.at)}-${crypto.randomUUID().slice(0, 8)}.json`;
  await env.PAYLOADS.put(key, JSON.stringify(entry), { httpMetadata: { contentType: "application/json" } });
  await env.PAYLOADS.put(marker, "", { customMetadata: { at: String(entry.at) } });
  await queue.retain();
}

/** The session's newest audit rows, newest first. */
export async function listAudit(env: Env, sessionId: string, limit = 100): Promise<AuditEntry[]> {
  const listed = await env.PAYLOADS.list({ prefix: `audit/${sessionId}/`, limit: Math.min(1000, Math.max(1, limit)) });
  const rows = await Promise.all(
    listed.objects.map(async (o) => (await (await env.PAYLOADS.get(o.key))?.json()) as AuditEntry | undefined),
  );
  return rows.filter((r): r is AuditEntry => !!r);
}
