import { parseSeeds } from "./payload-keys.ts";

// The router's secrets and the rules it serves under. API_KEYS, MINER_TOKEN_SECRET, PAYLOAD_KEY_SEEDS,
// ADMIN_SECRET and ROUTER_SIGNING_KEY are Worker secrets (`wrangler secret put` in production, the git-ignored `.dev.vars` that `npm start` writes in
// development); wrangler.toml only names them (`[secrets] required`). A router whose secrets break these rules
// refuses every request (middleware/config-guard.ts) instead of serving with a guessable secret.
//
// Local development is `ROUTER_ENV = "development"`, which only `.dev.vars` and the test harness set:
// wrangler.toml says "production" and `wrangler deploy` never reads `.dev.vars`, so a deployed router is in
// production unless someone sets the variable there on purpose.

/** Values that were committed to the repository as development defaults: public, so never valid in production. */
export const KNOWN_DEVELOPMENT_VALUES: ReadonlySet<string> = new Set([
  "dev-key",
  "dev-miner-token-secret-change-me",
  "c3e84a4ff4c4fde145f254cd82bf885fbc0acc7569b4818d7ac67082e6f1423a",
]);

/**
 * Private keys of the local development chains (anvil / hardhat accounts 0–2, printed by every such node):
 * public, so a router that signs receipts with one signs for anybody.
 */
export const PUBLIC_DEVELOPMENT_PRIVATE_KEYS: ReadonlySet<string> = new Set([
  "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]);

export const MIN_API_KEY_CHARS = 32;
export const MIN_ADMIN_SECRET_BYTES = 32;
/** Order of the secp256k1 group: a private key is an integer in [1, n). */
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
export const MIN_MINER_TOKEN_SECRET_BYTES = 32;
export const MIN_PAYLOAD_SEED_BYTES = 32;

/** Owner names of API keys; `*` is the owner of shared sessions and can never be a key's owner. */
export const OWNER = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;
/** API keys: printable, no separators of the `owner:key,…` list, no whitespace. */
const KEY = /^[\x21-\x2b\x2d-\x7e]+$/;

export function isDevelopment(env: Env): boolean {
  return env.ROUTER_ENV === "development";
}

/** Owners the router itself runs keyless routes as (lib/trial.ts TRIAL_OWNER, x402/config.ts X402_OWNER): no key may act as them. */
export const RESERVED_OWNERS: ReadonlySet<string> = new Set(["trial", "x402"]);

function apiKeyProblems(raw: string | undefined, production: boolean): string[] {
  if (!raw?.trim()) return ["API_KEYS is not set (comma-separated `owner:key` pairs)"];
  const problems: string[] = [];
  const seen = new Set<string>();
  raw.split(",").forEach((pair, i) => {
    const at = pair.indexOf(":");
    const owner = pair.slice(0, at).trim();
    const key = pair.slice(at + 1).trim();
    if (at <= 0 || !OWNER.test(owner) || !KEY.test(key)) {
      problems.push(`API_KEYS entry ${i + 1} is not \`owner:key\` (owner: letters, digits, _.@-; key: printable, no ',' or spaces)`);
      return;
    }
    if (RESERVED_OWNERS.has(owner)) problems.push(`API_KEYS entry ${i + 1} uses the reserved owner name ${owner}`);
    if (seen.has(key)) problems.push(`API_KEYS entry ${i + 1} repeats another entry's key`);
    seen.add(key);
    if (production && KNOWN_DEVELOPMENT_VALUES.has(key)) problems.push(`API_KEYS entry ${i + 1} (${owner}) is a published development key`);
    else if (production && key.length < MIN_API_KEY_CHARS) {
      problems.push(`API_KEYS entry ${i + 1} (${owner}) is shorter than ${MIN_API_KEY_CHARS} characters`);
    }
  });
  return problems;
}

function minerSecretProblems(raw: string | undefined, production: boolean): string[] {
  if (!raw) return ["MINER_TOKEN_SECRET is not set"];
  if (production && KNOWN_DEVELOPMENT_VALUES.has(raw)) return ["MINER_TOKEN_SECRET is the published development secret"];
  if (new TextEncoder().encode(raw).length < MIN_MINER_TOKEN_SECRET_BYTES) {
    return [`MINER_TOKEN_SECRET is shorter than ${MIN_MINER_TOKEN_SECRET_BYTES} bytes`];
  }
  return [];
}

function seedProblems(raw: string | undefined, production: boolean): string[] {
  if (!raw?.trim()) return ["PAYLOAD_KEY_SEEDS is not set (`version:hex`, …)"];
  let seeds: Map<number, Uint8Array>;
  try {
    seeds = parseSeeds(raw);
  } catch {
    return ["PAYLOAD_KEY_SEEDS is malformed: entries are `version:hex` with version ≥ 1"];
  }
  const entries = raw.split(",").filter((p) => p.trim()).length;
  if (seeds.size !== entries) return ["PAYLOAD_KEY_SEEDS lists a version twice"];
  const problems: string[] = [];
  for (const [version, seed] of seeds) {
    if (seed.length < MIN_PAYLOAD_SEED_BYTES)
      problems.push(`PAYLOAD_KEY_SEEDS version ${version} is shorter than ${MIN_PAYLOAD_SEED_BYTES} bytes`);
  }
  if (production) {
    for (const part of raw.split(",")) {
      const hex = part.trim().split(":")[1]?.replace(/^0x/, "").toLowerCase();
      if (hex && KNOWN_DEVELOPMENT_VALUES.has(hex))
        problems.push(`PAYLOAD_KEY_SEEDS version ${part.split(":")[0].trim()} is the published development seed`);
    }
  }
  return problems;
}

function adminSecretProblems(raw: string | undefined, production: boolean): string[] {
  if (!raw) return ["ADMIN_SECRET is not set (the bearer of the key admin API)"];
  if (production && KNOWN_DEVELOPMENT_VALUES.has(raw)) return ["ADMIN_SECRET is a published development value"];
  if (new TextEncoder().encode(raw).length < MIN_ADMIN_SECRET_BYTES)
    return [`ADMIN_SECRET is shorter than ${MIN_ADMIN_SECRET_BYTES} bytes`];
  return [];
}

function signingKeyProblems(raw: string | undefined, production: boolean): string[] {
  if (!raw) return ["ROUTER_SIGNING_KEY is not set (a 32-byte secp256k1 private key, hex)"];
  const hex = raw.replace(/^0x/, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) return ["ROUTER_SIGNING_KEY is not 32 bytes of hex (64 hex digits, 0x optional)"];
  const k = BigInt(`0x${hex}`);
  if (k === 0n || k >= SECP256K1_N) return ["ROUTER_SIGNING_KEY is not a valid secp256k1 private key"];
  if (production && (PUBLIC_DEVELOPMENT_PRIVATE_KEYS.has(hex) || KNOWN_DEVELOPMENT_VALUES.has(hex))) {
    return ["ROUTER_SIGNING_KEY is a published development key"];
  }
  return [];
}

/** The router's receipt-signing key as viem takes it (`0x` + 64 hex digits); secretProblems vouches for its form. */
export function routerSigningKey(env: Env): `0x${string}` {
  return `0x${env.ROUTER_SIGNING_KEY.replace(/^0x/, "").toLowerCase()}`;
}

/**
 * Everything wrong with the router's secrets, one line each (empty: fine). Outside local development the
 * published development values are refused and API keys need MIN_API_KEY_CHARS; the other minimums hold
 * everywhere. Lines name the variable, never its value.
 */
export function secretProblems(env: Env): string[] {
  const production = !isDevelopment(env);
  return [
    ...apiKeyProblems(env.API_KEYS, production),
    ...minerSecretProblems(env.MINER_TOKEN_SECRET, production),
    ...seedProblems(env.PAYLOAD_KEY_SEEDS, production),
    ...adminSecretProblems(env.ADMIN_SECRET, production),
    ...signingKeyProblems(env.ROUTER_SIGNING_KEY, production),
  ];
}
