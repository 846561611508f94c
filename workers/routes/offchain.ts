import { type Context, Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { type Hex, keccak256, recoverTypedDataAddress } from "viem";
import { deploymentDomain } from "../../durable-objects/deployment.ts";
import { envelopeInfo, fromBase64, sha256Hex } from "../../shared/payload-crypto.ts";
import {
  OffchainResultRequest,
  type OffchainResultResponse,
  type ParsedUrn,
  type PayloadDescriptor,
  parseUrn,
} from "../../shared/payloads.ts";
import { offchainResultTypedData } from "../../shared/signing.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { caller, minerCaller } from "../lib/credentials.ts";
import type { AuditClass } from "../lib/payload-audit.ts";
import { auditRefusal, requireOwner } from "../lib/payload-keys.ts";
import { decryptObject, readObject, storeResult, utf8 } from "../lib/payload-store.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { catalogQueue } from "../lib/tenancy.ts";

// Off-chain objects (mounted at /api/v3/offchain):
//   POST /result        miner token: the signed result write. Checked before anything is stored: the EIP-712
//                       signature recovers to the token's miner, the content hashes to what was signed, the
//                       miner holds the task, and a private task's content is an envelope that opens with the
//                       task key. The router records keccak256(plaintext) with the object; the SessionQueue
//                       compares it with the miner's precommit when the commit names the URN. A client-sealed
//                       task's envelope is not opened: the miner names that hash (`result_hash`).
//   GET /payload/:urn   miner token (holding that task), or the session owner's API key: the stored bytes.
//   GET /result/:urn    the session owner's API key: the stored bytes (ciphertext for private tasks, which
//                       the client opens with its task key), or `?decrypt=true` for the plaintext.

export const offchain = new Hono<AppEnv>();

function urnParam(c: Context<AppEnv>, kind: ParsedUrn["kind"]): ParsedUrn {
  const urn = parseUrn(c.req.param("urn") ?? ""); // Hono hands path parameters over decoded
  if (!urn || urn.kind !== kind) throw new ApiError("invalid_request", `not a ${kind} URN`, [{ path: "urn", message: "invalid" }]);
  return urn;
}

async function refuse(
  c: Context<AppEnv>,
  miner: string,
  urn: { session: string; task: string },
  action: "payload_fetch" | "result_write",
  refusal: { class: AuditClass; reason: string },
): Promise<never> {
  const { reason } = refusal;
  await auditRefusal(c.env, {
    at: Date.now(),
    session_id: urn.session,
    task_id: urn.task,
    miner,
    action,
    class: refusal.class,
    outcome: "refused",
    reason,
    request_id: c.get("requestId") ?? null,
  });
  throw new ApiError("forbidden", reason);
}

function objectResponse(c: Context<AppEnv>, _urn: ParsedUrn, obj: { bytes: Uint8Array; encrypted: boolean }): Response {
  const info = obj.encrypted ? envelopeInfo(obj.bytes) : null;
  return c.body(obj.bytes as Uint8Array<ArrayBuffer>, 200, {
    "Content-Type": "application/octet-stream",
    "X-Payload-Encrypted": obj.encrypted ? "1" : "0",
    ...(info ? { "X-Payload-Key-Version": String(info.version) } : {}),
    "Cache-Control": "no-store",
  });
}

/** Whether the miner holds the task; a session outside the catalog holds nothing (and gets no Durable Object). */
async function holds(
  env: Env,
  sessionId: string,
  taskId: string,
  miner: string,
): Promise<{ held: boolean; payload: PayloadDescriptor | null }> {
  const queue = await catalogQueue(env, sessionId);
  return queue ? queue.holdsTask(taskId, miner) : { held: false, payload: null };
}

/**
 * A miner's one off-chain result object per task: only the holder of a payload task (an inline task's result is
 * committed inline), once — claimed in the SessionQueue, and checked in R2 in case the queue was evicted since.
 */
async function claimResultWrite(
  c: Context<AppEnv>,
  miner: string,
  scope: { session: string; task: string },
  sha256: string,
): Promise<PayloadDescriptor> {
  const queue = await catalogQueue(c.env, scope.session);
  const claim = queue ? await queue.claimResult(scope.task, miner, sha256) : null;
  if (!claim?.ok) {
    const reason = claim?.error.message ?? `miner does not hold task ${scope.session}/${scope.task}`;
    if (claim?.error.code === "conflict") throw new ApiError("conflict", reason);
    return refuse(c, miner, scope, "result_write", { class: claim ? `claim_${claim.error.code}` : "not_holder", reason });
  }
  const prefix = `result/${scope.session}/${scope.task}/${miner}/`;
  const earlier = await c.env.PAYLOADS.list({ prefix, limit: 2 });
  if (earlier.objects.some((o) => o.key !== `${prefix}${sha256}`)) {
    throw new ApiError("conflict", `this miner already wrote its off-chain result of task ${scope.task}`);
  }
  return claim.payload;
}

offchain.get("/payload/:urn", async (c) => {
  const urn = urnParam(c, "prompt");
  const who = await caller(c);
  if (who.kind === "client") await requireOwner(c.env, urn.session, who.owner, { shared: true, taskId: urn.task });
  else if (!(await holds(c.env, urn.session, urn.task, who.address)).held) {
    await refuse(c, who.address, urn, "payload_fetch", {
      class: "not_holder",
      reason: `miner does not hold task ${urn.session}/${urn.task}`,
    });
  }
  const obj = await readObject(c.env, urn);
  if (!obj) throw new ApiError("not_found", "no stored payload under this URN");
  return objectResponse(c, urn, obj);
});

offchain.get("/result/:urn", async (c) => {
  const urn = urnParam(c, "result");
  const who = await caller(c);
  if (who.kind !== "client") throw new ApiError("forbidden", "results are read by the session owner (API key)");
  await requireOwner(c.env, urn.session, who.owner, { shared: true, taskId: urn.task });
  const obj = await readObject(c.env, urn);
  if (!obj) throw new ApiError("not_found", "no stored result under this URN");
  if (c.req.query("decrypt") === "true" || c.req.query("decrypt") === "1") {
    const text = utf8(obj.encrypted ? await decryptObject(c.env, urn, obj.bytes) : obj.bytes);
    c.header("Cache-Control", "no-store");
    return c.text(text);
  }
  return objectResponse(c, urn, obj);
});

/**
 * The write's body may be PAYLOAD_MAX_BYTES (8 MiB): the miner token is checked (signature, expiry, revocation)
 * before a byte of it is read, so a caller without a valid miner credential costs the router no parse.
 */
const minerFirst = createMiddleware<AppEnv>(async (c, next) => {
  c.set("miner", await minerCaller(c));
  await next();
});

/**
 * keccak256 of the result's plaintext, which the router records with the object: hashed here (opened with the task
 * key when private), or — for a task whose prompt the client sealed — the miner's `result_hash`, unopened: the
 * router reads nothing of such a task. The miner's precommit binds it to that hash all the same, and the client
 * checks the text it opens against it.
 */
async function recordedHash(
  env: Env,
  body: OffchainResultRequest,
  payload: PayloadDescriptor,
  content: Uint8Array,
  who: { miner: string; sha: string },
): Promise<{ resultHash: Hex; keyVersion?: number }> {
  if (!payload.encrypted) return { resultHash: keccak256(utf8Checked(content)) };
  // R2 holds ciphertext only for private tasks: the content must be this task's result envelope.
  const info = envelopeInfo(content);
  if (!info) throw new ApiError("invalid_request", "this task is private: its result must be an encryption envelope");
  if (payload.sealed_by === "client") {
    if (info.scope !== "task" || info.version !== payload.key_version) {
      throw new ApiError("invalid_request", `the result must be an envelope under the task key of version ${payload.key_version}`);
    }
    if (!body.result_hash) {
      throw new ApiError("invalid_request", "the client sealed this task: name the result's keccak256 in result_hash", [
        { path: "result_hash", message: "required for a client-sealed task" },
      ]);
    }
    return { resultHash: body.result_hash as Hex, keyVersion: info.version };
  }
  let plain: Uint8Array;
  try {
    const urn = { kind: "result" as const, session: body.session_id, task: body.task_id, miner: who.miner, sha256: who.sha, key: "" };
    plain = await decryptObject(env, urn, content);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("invalid_request", "result envelope does not open with this task's key");
  }
  return { resultHash: keccak256(utf8Checked(plain)), keyVersion: info.version };
}

function utf8Checked(bytes: Uint8Array): Uint8Array {
  try {
    utf8(bytes);
  } catch {
    throw new ApiError("invalid_request", "result is not UTF-8 text");
  }
  return bytes;
}

offchain.post("/result", minerFirst, jsonBody(OffchainResultRequest), async (c) => {
  const miner = c.get("miner");
  const body = c.req.valid("json");
  const scope = { session: body.session_id, task: body.task_id };
  let content: Uint8Array;
  try {
    content = fromBase64(body.content);
  } catch {
    throw new ApiError("invalid_request", "content is not base64", [{ path: "content", message: "invalid base64" }]);
  }
  const sha = await sha256Hex(content);
  if (`0x${sha}` !== body.content_hash) {
    throw new ApiError("invalid_request", "content does not hash to content_hash", [
      { path: "content_hash", message: `content hashes to 0x${sha}` },
    ]);
  }
  const signer = await recoverTypedDataAddress({
    ...offchainResultTypedData(
      { session: body.session_id, task: body.task_id, miner: miner as Hex, content: body.content_hash as Hex },
      deploymentDomain(c.env),
    ),
    signature: body.signature as Hex,
  }).catch(() => null);
  if (signer?.toLowerCase() !== miner) {
    await refuse(c, miner, scope, "result_write", { class: "bad_signature", reason: "signature does not recover to the miner's address" });
  }
  const payload = await claimResultWrite(c, miner, scope, sha);
  const encrypted = payload.encrypted;
  const { resultHash, keyVersion } = await recordedHash(c.env, body, payload, content, { miner, sha });
  const urn = await storeResult(c.env, {
    sessionId: body.session_id,
    taskId: body.task_id,
    miner,
    content,
    sha256: sha,
    resultHash,
    encrypted,
    keyVersion,
    signature: body.signature,
  });
  const res: OffchainResultResponse = { urn, result_hash: resultHash, bytes: content.length, encrypted };
  return c.json(res, 201);
});
