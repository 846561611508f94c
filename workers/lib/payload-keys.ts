import { isShared } from "../../durable-objects/tenancy.ts";
import { deriveSessionKey, deriveTaskKey, fromHex } from "../../shared/payload-crypto.ts";
import { ApiError } from "./api-error.ts";
import { visibleSession } from "./tenancy.ts";

// Payload keys and who may have them. Seeds come from `PAYLOAD_KEY_SEEDS` (`version:hex,…`, the highest
// version encrypts new payloads, older ones still decrypt what they sealed); keys derive per session and per
// task (shared/payload-crypto.ts). Miners get keys only when allowlisted: `PAYLOAD_ALLOWLIST`
// (`sid:addr,addr;sid-tid:addr`) plus what session owners set through the API (kept in R2 at `acl/<sid>.json`).
// Every refusal is logged and kept as an audit row in R2 (`audit/<sid>/…`), listed by the owner.

const seedCache = new Map<string, Map<number, Uint8Array>>();

/** Parses `1:hex,2:hex`; throws on a malformed entry (a misconfigured seed must not pass silently). */
export function parseSeeds(raw: string | undefined): Map<number, Uint8Array> {
  const key = raw ?? "";
  let seeds = seedCache.get(key);
  if (seeds) return seeds;
  seeds = new Map();
  for (const part of key
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^(\d{1,9}):(?:0x)?([0-9a-fA-F]+)$/.exec(part);
    if (!m || Number(m[1]) < 1 || m[2].length < 32 || m[2].length % 2 !== 0) {
      throw new Error("PAYLOAD_KEY_SEEDS entries are `version:hex` with version ≥ 1 and at least 16 seed bytes");
    }
    seeds.set(Number(m[1]), fromHex(m[2]));
  }
  seedCache.set(key, seeds);
  return seeds;
}

export function currentKeyVersion(seeds: Map<number, Uint8Array>): number | null {
  return seeds.size ? Math.max(...seeds.keys()) : null;
}

function seedFor(env: Env, version: number | undefined): { seed: Uint8Array; version: number } {
  const seeds = parseSeeds(env.PAYLOAD_KEY_SEEDS);
  const v = version ?? currentKeyVersion(seeds);
  if (v === null) throw new ApiError("invalid_request", "private payloads are not configured on this router (no PAYLOAD_KEY_SEEDS)");
  const seed = seeds.get(v);
  if (!seed) throw new ApiError("not_found", `no payload key version ${v} (known: ${[...seeds.keys()].join(", ")})`);
  return { seed, version: v };
}

export async function sessionKey(env: Env, sessionId: string, version?: number): Promise<{ key: Uint8Array; version: number }> {
  const s = seedFor(env, version);
  return { key: await deriveSessionKey(s.seed, sessionId), version: s.version };
}

export async function taskKey(
  env: Env,
  sessionId: string,
  taskId: string,
  version?: number,
): Promise<{ key: Uint8Array; version: number }> {
  const s = await sessionKey(env, sessionId, version);
  return { key: await deriveTaskKey(s.key, sessionId, taskId), version: s.version };
}

// ── allowlist ──────────────────────────────────────────────────────────────────────────────────────────

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const allowCache = new Map<string, Map<string, Set<string>>>();

/**
 * Parses `sid:addr,addr;sid-tid:addr` into scope → addresses (lowercase). A scope is a session id, or a
 * session id, `-` and a task id. Malformed addresses are skipped.
 */
export function parseAllowlist(raw: string | undefined): Map<string, Set<string>> {
  const key = raw ?? "";
  let table = allowCache.get(key);
  if (table) return table;
  table = new Map();
  for (const entry of key
    .split(";")
    .map((e) => e.trim())
    .filter(Boolean)) {
    const i = entry.lastIndexOf(":");
    if (i <= 0) continue;
    const scope = entry.slice(0, i).trim();
    const set = table.get(scope) ?? new Set<string>();
    for (const a of entry
      .slice(i + 1)
      .split(",")
      .map((x) => x.trim()))
      if (ADDRESS.test(a)) set.add(a.toLowerCase());
    table.set(scope, set);
  }
  allowCache.set(key, table);
  return table;
}

/** What an owner set through the API for one session. */
export interface StoredAllowlist {
  session: string[];
  tasks: { [taskId: string]: string[] };
}

const aclKey = (sessionId: string) => `acl/${sessionId}.json`;

export async function readStoredAllowlist(env: Env, sessionId: string): Promise<StoredAllowlist> {
  const obj = await env.PAYLOADS.get(aclKey(sessionId));
  return obj ? ((await obj.json()) as StoredAllowlist) : { session: [], tasks: {} };
}

export async function writeStoredAllowlist(env: Env, sessionId: string, acl: StoredAllowlist): Promise<void> {
  await env.PAYLOADS.put(aclKey(sessionId), JSON.stringify(acl), { httpMetadata: { contentType: "application/json" } });
}

/** Whether `miner` may have the key of this session (taskId null) or of this task (session or task scope). */
export async function minerAllowed(env: Env, sessionId: string, taskId: string | null, miner: string): Promise<boolean> {
  const addr = miner.toLowerCase();
  const table = parseAllowlist(env.PAYLOAD_ALLOWLIST);
  if (table.get(sessionId)?.has(addr)) return true;
  if (taskId !== null && table.get(`${sessionId}-${taskId}`)?.has(addr)) return true;
  const stored = await readStoredAllowlist(env, sessionId);
  if (stored.session.includes(addr)) return true;
  return taskId !== null && (stored.tasks[taskId] ?? []).includes(addr);
}

/** The miners allowlisted for one task's key (session or task scope): who may verify it (verify-round.ts). */
export async function taskKeyHolders(env: Env, sessionId: string, taskId: string): Promise<string[]> {
  const { session, tasks } = await effectiveAllowlist(env, sessionId);
  return [...new Set([...session, ...(tasks[taskId] ?? [])])];
}

/** The effective allowlist of a session: configured and stored entries. */
export async function effectiveAllowlist(
  env: Env,
  sessionId: string,
): Promise<{ session: string[]; tasks: { [taskId: string]: string[] } }> {
  const table = parseAllowlist(env.PAYLOAD_ALLOWLIST);
  const stored = await readStoredAllowlist(env, sessionId);
  const session = new Set([...(table.get(sessionId) ?? []), ...stored.session]);
  const tasks: { [taskId: string]: Set<string> } = {};
  for (const [scope, set] of table) {
    const m = /^(.*)-(\d{1,15})$/.exec(scope);
    if (m && m[1] === sessionId) tasks[m[2]] = new Set([...(tasks[m[2]] ?? []), ...set]);
  }
  for (const [tid, list] of Object.entries(stored.tasks)) tasks[tid] = new Set([...(tasks[tid] ?? []), ...list]);
  return { session: [...session].sort(), tasks: Object.fromEntries(Object.entries(tasks).map(([k, v]) => [k, [...v].sort()])) };
}

// ── audit ──────────────────────────────────────────────────────────────────────────────────────────────

export { type AuditEntry, auditRefusal, listAudit } from "./payload-audit.ts";

/**
 * Checks that `owner` may act for the session (lib/tenancy.ts: unknown, or another owner's, is 404) and, given
 * `taskId`, may see that task. A shared session (owner `*`) has no owner to hand keys, allowlists or audits to —
 * every key could claim them — so those are 403; its off-chain objects (opts.shared) are its submitter's alone.
 */
export async function requireOwner(
  env: Env,
  sessionId: string,
  owner: string,
  opts: { shared?: boolean; taskId?: string } = {},
): Promise<void> {
  const { config } = await visibleSession(env, sessionId, owner, opts.taskId);
  if (isShared(config) && !opts.shared) {
    throw new ApiError("forbidden", `session ${sessionId} is shared by every API key: create a session of your own for payload keys`);
  }
}
