import { type Context, Hono } from "hono";
import { z } from "zod";
import { toHex } from "../../shared/payload-crypto.ts";
import { PayloadKeyRequest, type PayloadKeyResponse } from "../../shared/payloads.ts";
import { MAX_TASK_ID, TaskId } from "../../shared/task-id.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { caller } from "../lib/credentials.ts";
import { AUDIT_CURSOR } from "../lib/payload-audit.ts";
import {
  auditRefusal,
  effectiveAllowlist,
  listAudit,
  minerAllowed,
  readStoredAllowlist,
  requireOwner,
  sessionKey,
  taskKey,
  writeStoredAllowlist,
} from "../lib/payload-keys.ts";
import { jsonBody, params, query } from "../lib/request-validation.ts";
import { SessionParam } from "../lib/schemas.ts";

// Payload keys (mounted at /api/v1/auth, before the API-key middleware: miners call it with their token).
//   POST /payload_enc_key/session {session_id, key_version?}           owner, or a miner on the session allowlist
//   POST /payload_enc_key/task    {session_id, task_id, key_version?}  owner, or a miner on the session or task allowlist
//   PUT  /payload_allowlist       {session_id, task_id?, miners, mode}  owner: add to / replace the stored allowlist
//   GET  /payload_allowlist/:sessionId                                  owner: configured + stored entries
//   GET  /payload_audit/:sessionId?limit=&before=                       owner: refused attempts, newest first, paged

export const payloadKeys = new Hono<AppEnv>();

const KDF = "HKDF-SHA256(seed[v]) → session key → task key (shared/payload-crypto.ts)";

async function handOut(c: Context<AppEnv>, scope: "session" | "task", body: PayloadKeyRequest) {
  const { session_id, key_version } = body;
  const task_id = scope === "task" ? body.task_id! : null;
  const who = await caller(c);
  if (who.kind === "client") {
    await requireOwner(c.env, session_id, who.owner);
  } else if (!(await minerAllowed(c.env, session_id, task_id, who.address))) {
    const reason = `miner is not on the payload allowlist of ${task_id ? `task ${session_id}/${task_id}` : `session ${session_id}`}`;
    await auditRefusal(c.env, {
      at: Date.now(),
      session_id,
      task_id,
      miner: who.address,
      action: "payload_key",
      class: task_id ? "task_not_allowlisted" : "session_not_allowlisted",
      outcome: "refused",
      reason,
      request_id: c.get("requestId") ?? null,
    });
    throw new ApiError("forbidden", reason);
  }
  const k = task_id ? await taskKey(c.env, session_id, task_id, key_version) : await sessionKey(c.env, session_id, key_version);
  const res: PayloadKeyResponse = {
    scope,
    session_id,
    task_id,
    key_version: k.version,
    key: toHex(k.key),
    algorithm: "AES-256-GCM",
    kdf: KDF,
  };
  c.header("Cache-Control", "no-store");
  return c.json(res);
}

payloadKeys.post("/payload_enc_key/session", jsonBody(PayloadKeyRequest), (c) => handOut(c, "session", c.req.valid("json")));

payloadKeys.post(
  "/payload_enc_key/task",
  jsonBody(PayloadKeyRequest.refine((b) => b.task_id !== undefined, { path: ["task_id"], message: "task_id is required" })),
  (c) => handOut(c, "task", c.req.valid("json")),
);

async function ownerOnly(c: Context<AppEnv>, sessionId: string): Promise<void> {
  const who = await caller(c);
  if (who.kind !== "client") throw new ApiError("forbidden", "only the session owner (API key) may do this");
  await requireOwner(c.env, sessionId, who.owner);
}

const Address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address");
const AllowlistBody = z.object({
  session_id: SessionParam.shape.sessionId,
  task_id: z.union([TaskId, z.number().int().min(1).max(MAX_TASK_ID).transform(String)]).optional(),
  miners: z.array(Address).max(256),
  /** `add` (default) merges; `replace` sets the scope's list to exactly `miners`. */
  mode: z.enum(["add", "replace"]).default("add"),
});

payloadKeys.put("/payload_allowlist", jsonBody(AllowlistBody), async (c) => {
  const body = c.req.valid("json");
  await ownerOnly(c, body.session_id);
  const acl = await readStoredAllowlist(c.env, body.session_id);
  const miners = body.miners.map((m) => m.toLowerCase());
  const merge = (old: string[]) => [...new Set(body.mode === "replace" ? miners : [...old, ...miners])].sort();
  if (body.task_id) acl.tasks[body.task_id] = merge(acl.tasks[body.task_id] ?? []);
  else acl.session = merge(acl.session);
  await writeStoredAllowlist(c.env, body.session_id, acl);
  return c.json({ session_id: body.session_id, ...(await effectiveAllowlist(c.env, body.session_id)) });
});

payloadKeys.get("/payload_allowlist/:sessionId", params(SessionParam), async (c) => {
  const { sessionId } = c.req.valid("param");
  await ownerOnly(c, sessionId);
  return c.json({ session_id: sessionId, ...(await effectiveAllowlist(c.env, sessionId)) });
});

const AuditQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: z.string().regex(AUDIT_CURSOR, "a next_before of an earlier page").optional(),
});

payloadKeys.get("/payload_audit/:sessionId", params(SessionParam), query(AuditQuery), async (c) => {
  const { sessionId } = c.req.valid("param");
  const { limit, before } = c.req.valid("query");
  await ownerOnly(c, sessionId);
  const page = await listAudit(c.env, sessionId, limit, before);
  return c.json({ session_id: sessionId, count: page.entries.length, entries: page.entries, next_before: page.next_before });
});
