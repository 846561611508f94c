import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Address, Hex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";

// The miner's identity is one secp256k1 key kept in a small JSON file. It is created on first run (mode 0600,
// so other local users cannot read it) and reused afterwards: the address is what the network's reputation
// and the precommit signatures attach to, so it must survive restarts.

export interface KeyFile {
  address: Address;
  private_key: Hex;
  created_at: string;
}

export interface Wallet {
  address: Address;
  account: PrivateKeyAccount;
  keyFile: string;
  /** True when this run generated the key. */
  created: boolean;
  /** Set when the key file is readable by group/others; the CLI warns about it. */
  insecureMode?: string;
}

export class WalletError extends Error {
  override name = "WalletError";
}

export function defaultKeyFile(): string {
  return join(homedir(), ".miner-agent", "key.json");
}

/** Expands a leading `~` (paths from env vars and defaults are not shell-expanded). */
export function expandHome(p: string): string {
  if (p === "~") return homedir();
  if (p.startsWith("~/") || p.startsWith("~\\")) return join(homedir(), p.slice(2));
  return resolve(p);
}

export async function loadOrCreateWallet(keyFilePath: string): Promise<Wallet> {
  const keyFile = expandHome(keyFilePath);
  const existing = await readKeyFile(keyFile);
  if (existing) return existing;
  try {
    return await createKeyFile(keyFile);
  } catch (err) {
    // Another process created it between our read and our exclusive create: use theirs.
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      const raced = await readKeyFile(keyFile);
      if (raced) return raced;
    }
    throw err;
  }
}

async function readKeyFile(keyFile: string): Promise<Wallet | null> {
  let raw: string;
  try {
    raw = await readFile(keyFile, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new WalletError(`cannot read key file ${keyFile}: ${(err as Error).message}`);
  }
  let parsed: Partial<KeyFile>;
  try {
    parsed = JSON.parse(raw) as Partial<KeyFile>;
  } catch {
    throw new WalletError(`key file ${keyFile} is not valid JSON; move it away to create a new key`);
  }
  const pk = parsed?.private_key;
  if (typeof pk !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(pk)) {
    throw new WalletError(`key file ${keyFile} has no valid private_key (0x + 64 hex digits)`);
  }
  let account: PrivateKeyAccount;
  try {
    account = privateKeyToAccount(pk as Hex);
  } catch (err) {
    throw new WalletError(`key file ${keyFile}: invalid private key (${(err as Error).message})`);
  }
  // A mismatching address means the file was edited by hand or corrupted; signing with a key whose address
  // differs from what the operator believes is theirs would be silently wrong, so refuse.
  if (typeof parsed.address === "string" && parsed.address.toLowerCase() !== account.address.toLowerCase()) {
    throw new WalletError(`key file ${keyFile}: address ${parsed.address} does not match its private key (${account.address})`);
  }
  const wallet: Wallet = { address: account.address, account, keyFile, created: false };
  if (process.platform !== "win32") {
    const mode = (await stat(keyFile)).mode & 0o777;
    if (mode & 0o077) wallet.insecureMode = "0" + mode.toString(8);
  }
  return wallet;
}

async function createKeyFile(keyFile: string): Promise<Wallet> {
  const privateKey = generatePrivateKey();
  const account = privateKeyToAccount(privateKey);
  const body: KeyFile = { address: account.address, private_key: privateKey, created_at: new Date().toISOString() };
  await mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
  // Write to a temp file then link it into place exclusively: never a half-written key, never an overwrite.
  const tmp = `${keyFile}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, JSON.stringify(body, null, 2) + "\n", { mode: 0o600, flag: "wx" });
  try {
    await linkExclusive(tmp, keyFile);
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return { address: account.address, account, keyFile, created: true };
}

/** rename() would replace an existing file; link() fails with EEXIST instead. Falls back where links are unsupported. */
async function linkExclusive(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw err;
    if (code === "EPERM" || code === "ENOTSUP" || code === "EXDEV") {
      try {
        await stat(to);
        throw Object.assign(new Error(`${to} exists`), { code: "EEXIST" });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
      await rename(from, to);
      return;
    }
    throw err;
  }
}
