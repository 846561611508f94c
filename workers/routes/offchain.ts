import { type Context, Hono } from "hono";
import { type Hex, keccak256, recoverTypedDataAddress } from "viem";
import { sessionQueue } from "../../durable-objects/stubs.ts";
import { envelopeInfo, fromBase64, sha256Hex } from "../../shared/payload-crypto.ts";
import { OffchainResultRequest, type OffchainResultResponse, type ParsedUrn, parseUrn } from "../../shared/payloads.ts";
import { offchainResultTypedData } from "../../shared/signing.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { caller, minerCaller } from "../lib/credentials.ts";
import { auditRefusal, requireOwner } from "../lib/payload-keys.ts";
import { decryptObject, readObject, storeResult, utf8 } from "../lib/payload-store.ts";
import { jsonBody } from "../lib/request-validation.ts";

// Off-chain objects (mounted at /api/v3/offchain):
//   POST /result        miner token: the signed result write. Checked before anything is stored: the EIP-712
//                       signature recovers to the token's miner, the content hashes to what was signed, the
//                       miner holds the task, and a private task's content is an envelope that opens with the
//                       task key. The router records keccak256(plaintext) with the object; the SessionQueue
//                       compares it with the miner's precommit when the commit names the URN.
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
  reason: string,
): Promise<never> {
  await auditRefusal(c.env, {
    at: Date.now(),
    session_id: urn.session,
    task_id: urn.task,
    miner,
    action,
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

offchain.get("/payload/:urn", async (c) => {
  const urn = urnParam(c, "prompt");
  const who = await caller(c);
  if (who.kind === "client") await requireOwner(c.env, urn.session, who.owner, { shared: true });
  else if (!(await sessionQueue(c.env, urn.session).holdsTask(urn.task, who.address)).held) {
    await refuse(c, who.address, urn, "payload_fetch", `miner does not hold task ${urn.session}/${urn.task}`);
  }
  const obj = await readObject(c.env, urn);
  if (!obj) throw new ApiError("not_found", "no stored payload under this URN");
  return objectResponse(c, urn, obj);
});

offchain.get("/result/:urn", async (c) => {
  const urn = urnParam(c, "result");
  const who = await caller(c);
  if (who.kind !== "client") throw new ApiError("forbidden", "results are read by the session owner (API key)");
  await requireOwner(c.env, urn.session, who.owner, { shared: true });
  const obj = await readObject(c.env, urn);
  if (!obj) throw new ApiError("not_found", "no stored result under this URN");
  if (c.req.query("decrypt") === "true" || c.req.query("decrypt") === "1") {
    const text = utf8(obj.encrypted ? await decryptObject(c.env, urn, obj.bytes) : obj.bytes);
    c.header("Cache-Control", "no-store");
    return c.text(text);
  }
  return objectResponse(c, urn, obj);
});

offchain.post("/result", jsonBody(OffchainResultRequest), async (c) => {
  const miner = await minerCaller(c);
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
    ...offchainResultTypedData({ session: body.session_id, task: body.task_id, miner: miner as Hex, content: body.content_hash as Hex }),
    signature: body.signature as Hex,
  }).catch(() => null);
  if (signer?.toLowerCase() !== miner) {
    await refuse(c, miner, scope, "result_write", "signature does not recover to the miner's address");
  }
  const held = await sessionQueue(c.env, body.session_id).holdsTask(body.task_id, miner);
  if (!held.held) await refuse(c, miner, scope, "result_write", `miner does not hold task ${body.session_id}/${body.task_id}`);

  const encrypted = held.payload?.encrypted === true;
  let plain = content;
  let keyVersion: number | undefined;
  if (encrypted) {
    // R2 holds ciphertext only for private tasks: the content must be this task's result envelope.
    const info = envelopeInfo(content);
    if (!info) throw new ApiError("invalid_request", "this task is private: its result must be an encryption envelope");
    keyVersion = info.version;
    try {
      plain = await decryptObject(
        c.env,
        { kind: "result", session: body.session_id, task: body.task_id, miner, sha256: sha, key: "" },
        content,
      );
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError("invalid_request", "result envelope does not open with this task's key");
    }
  }
  try {
    utf8(plain);
  } catch {
    throw new ApiError("invalid_request", "result is not UTF-8 text");
  }
  const resultHash = keccak256(plain);
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
