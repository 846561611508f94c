// Local development secrets for `npm start`: `.dev.vars` (git-ignored; wrangler dev reads it, wrangler deploy
// never does). The first run writes fresh random values; later runs keep what is there (several `owner:key`
// pairs in API_KEYS for multi-tenant work, say) and only add what is missing.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const HEADER = `# Local development secrets, written by \`npm start\` (git-ignored: never commit or deploy these).
# ROUTER_ENV=development lets the router accept development keys; a deployed router is in production and needs
# secrets set with \`wrangler secret put\`. API_KEYS takes several comma-separated owner:key pairs.
`;

/** Fresh values for every secret the router needs, and the development flag. */
export function freshDevVars(): Record<string, string> {
  return {
    ROUTER_ENV: "development",
    API_KEYS: `dev:${randomBytes(24).toString("base64url")}`,
    MINER_TOKEN_SECRET: randomBytes(32).toString("hex"),
    PAYLOAD_KEY_SEEDS: `1:${randomBytes(32).toString("hex")}`,
    ADMIN_SECRET: randomBytes(32).toString("base64url"),
    // 32 random bytes are a valid secp256k1 key but for a 2^-128 chance (workers/lib/secrets.ts checks it).
    ROUTER_SIGNING_KEY: `0x${randomBytes(32).toString("hex")}`,
    // Optional: the key the in-process x402 facilitator pays settlement gas with (`npm start` funds it on the local chain).
    FACILITATOR_KEY: `0x${randomBytes(32).toString("hex")}`,
  };
}

/** `KEY=value` lines (quotes stripped), as dotenv reads them for the values written here. */
export function parseDevVars(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) vars[m[1]] = m[2].replace(/^(["'])(.*)\1$/, "$2");
  }
  return vars;
}

/** Makes sure `<root>/.dev.vars` holds every secret; returns its values and whether anything was written. */
export function ensureDevVars(root: string): { vars: Record<string, string>; path: string; written: string[] } {
  const path = join(root, ".dev.vars");
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  const vars = parseDevVars(text);
  const missing = Object.entries(freshDevVars()).filter(([k]) => !vars[k]);
  if (missing.length > 0) {
    const lines = missing.map(([k, v]) => `${k}=${v}`).join("\n");
    writeFileSync(path, `${text ? `${text.replace(/\n*$/, "\n")}` : HEADER}${lines}\n`, { mode: 0o600 });
    for (const [k, v] of missing) vars[k] = v;
  }
  return { vars, path, written: missing.map(([k]) => k) };
}

/** The first API key of `owner:key,…`. */
export function firstApiKey(apiKeys: string): string {
  const pair = apiKeys.split(",")[0] ?? "";
  return pair.slice(pair.indexOf(":") + 1).trim();
}
