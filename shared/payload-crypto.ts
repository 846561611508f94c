// Payload encryption, shared by the router, the miner agent and clients: HKDF key derivation (WebCrypto) and
// the AES-256-GCM envelope. Pure WebCrypto, so it runs the same in workerd, Node 22 and browsers.
//
// Keys: a versioned secret seed (router config `PAYLOAD_KEY_SEEDS`) → session key → task key.
//   session key = HKDF-SHA256(ikm = seed[version],  salt = SALT, info = "edge-payload/session/<sid>")
//   task key    = HKDF-SHA256(ikm = session key,     salt = SALT, info = "edge-payload/task/<sid>/<tid>")
// Whoever holds a session key can derive every task key of that session locally; a task key opens one task.
// Every payload is encrypted with its task key.
//
// Envelope (binary, 21-byte header then AES-GCM ciphertext with its 16-byte tag):
//   0..3   magic "EPE1"
//   4      key scope: 1 = session key, 2 = task key
//   5..8   key version (uint32, big-endian): which seed to derive from, so old data opens after a rotation
//   9..20  IV (12 random bytes)
//   21..   ciphertext ‖ tag
// Additional authenticated data = the 21 header bytes ‖ UTF-8 "<kind>:<sid>:<tid>" (kind "prompt" or
// "result"), so a ciphertext cannot be passed off as another task's or as the other kind.

export const PAYLOAD_KDF_SALT = "edge-inference-network/payload-keys/v1";
const MAGIC = [0x45, 0x50, 0x45, 0x31]; // "EPE1"
export const ENVELOPE_HEADER_BYTES = 21;
export type KeyScope = "session" | "task";
/** What an envelope holds; `token_ids`: a private verified task's completion ids (uint32 little-endian). */
export type PayloadKind = "prompt" | "result" | "token_ids";

const enc = new TextEncoder();

export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

export function fromHex(hex: string): Uint8Array {
  const h = hex.startsWith("0x") ? hex.slice(2) : hex;
  if (h.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(h)) throw new Error("invalid hex");
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** SHA-256 of bytes, hex without prefix (what URNs name). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource)));
}

async function hkdf(ikm: Uint8Array, info: string): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", ikm as BufferSource, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: enc.encode(PAYLOAD_KDF_SALT), info: enc.encode(info) },
    key,
    256,
  );
  return new Uint8Array(bits);
}

export function deriveSessionKey(seed: Uint8Array, sessionId: string): Promise<Uint8Array> {
  return hkdf(seed, `edge-payload/session/${sessionId}`);
}

export function deriveTaskKey(sessionKey: Uint8Array, sessionId: string, taskId: string): Promise<Uint8Array> {
  return hkdf(sessionKey, `edge-payload/task/${sessionId}/${taskId}`);
}

export interface EnvelopeContext {
  kind: PayloadKind;
  sessionId: string;
  taskId: string;
}

function header(scope: KeyScope, version: number, iv: Uint8Array): Uint8Array {
  const h = new Uint8Array(ENVELOPE_HEADER_BYTES);
  h.set(MAGIC, 0);
  h[4] = scope === "session" ? 1 : 2;
  new DataView(h.buffer).setUint32(5, version >>> 0, false);
  h.set(iv, 9);
  return h;
}

function aad(head: Uint8Array, ctx: EnvelopeContext): Uint8Array {
  const c = enc.encode(`${ctx.kind}:${ctx.sessionId}:${ctx.taskId}`);
  const out = new Uint8Array(head.length + c.length);
  out.set(head, 0);
  out.set(c, head.length);
  return out;
}

function aesKey(raw: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  if (raw.length !== 32) throw new Error("payload keys are 32 bytes (AES-256)");
  return crypto.subtle.importKey("raw", raw as BufferSource, { name: "AES-GCM" }, false, [usage]);
}

export interface EnvelopeInfo {
  scope: KeyScope;
  version: number;
}

/** Reads the header of an envelope; null when the bytes are not one. */
export function envelopeInfo(bytes: Uint8Array): EnvelopeInfo | null {
  if (bytes.length < ENVELOPE_HEADER_BYTES + 16) return null;
  for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) return null;
  if (bytes[4] !== 1 && bytes[4] !== 2) return null;
  return { scope: bytes[4] === 1 ? "session" : "task", version: new DataView(bytes.buffer, bytes.byteOffset).getUint32(5, false) };
}

export async function sealPayload(key: Uint8Array, plaintext: Uint8Array, info: EnvelopeInfo, ctx: EnvelopeContext): Promise<Uint8Array> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const head = header(info.scope, info.version, iv);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: aad(head, ctx) as BufferSource },
      await aesKey(key, "encrypt"),
      plaintext as BufferSource,
    ),
  );
  const out = new Uint8Array(head.length + ct.length);
  out.set(head, 0);
  out.set(ct, head.length);
  return out;
}

/** Opens an envelope; throws when it is not one, or the key, context or bytes do not match. */
export async function openPayload(key: Uint8Array, envelope: Uint8Array, ctx: EnvelopeContext): Promise<Uint8Array> {
  if (!envelopeInfo(envelope)) throw new Error("not a payload envelope");
  const head = envelope.subarray(0, ENVELOPE_HEADER_BYTES);
  const iv = envelope.subarray(9, 21);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: iv as BufferSource, additionalData: aad(head, ctx) as BufferSource },
        await aesKey(key, "decrypt"),
        envelope.subarray(ENVELOPE_HEADER_BYTES) as BufferSource,
      ),
    );
  } catch {
    throw new Error("payload does not decrypt with this key and context");
  }
}
