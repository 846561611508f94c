import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_CHAIN_ID, deploymentDomain, deploymentProblems, routerIdentity } from "../../durable-objects/deployment.ts";
import app from "../../workers/index.ts";
import { secretProblems } from "../../workers/lib/secrets.ts";
import { TRIAL_OWNER } from "../../workers/lib/trial.ts";
import { runReplicas } from "../../workers/lib/work-sessions.ts";
import { X402_OWNER } from "../../workers/x402/config.ts";
import { env } from "./helpers.ts";

// The rules a router's secrets must meet before it serves (workers/lib/secrets.ts), and what a replica that
// failed inside the router records as its evidence (no internal message reaches the client).

const hex = (bytes: number) => "ab".repeat(bytes);
const STRONG = {
  ROUTER_ENV: "production",
  API_KEYS: `alice:${"k".repeat(32)},bob:${"m".repeat(40)}`,
  MINER_TOKEN_SECRET: hex(32),
  PAYLOAD_KEY_SEEDS: `1:${hex(32)},2:${hex(48)}`,
  ADMIN_SECRET: "s".repeat(32),
  ROUTER_SIGNING_KEY: `0x${hex(32)}`,
};
const withVars = (vars: Partial<typeof STRONG>): Env => ({ ...env, ...STRONG, ...vars });

describe("secret rules", () => {
  it("strong production secrets pass, several owner:key pairs included", () => {
    expect(secretProblems(withVars({}))).toEqual([]);
  });

  it("refuses missing secrets", () => {
    const problems = secretProblems(
      withVars({ API_KEYS: "", MINER_TOKEN_SECRET: "", PAYLOAD_KEY_SEEDS: " ", ADMIN_SECRET: "", ROUTER_SIGNING_KEY: "" }),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^API_KEYS is not set/),
      expect.stringMatching(/^MINER_TOKEN_SECRET is not set/),
      expect.stringMatching(/^PAYLOAD_KEY_SEEDS is not set/),
      expect.stringMatching(/^ADMIN_SECRET is not set/),
      expect.stringMatching(/^ROUTER_SIGNING_KEY is not set/),
    ]);
    // Unset is unset in development too: the admin API and receipts have no development fallback.
    expect(secretProblems(withVars({ ROUTER_ENV: "development", ADMIN_SECRET: "", ROUTER_SIGNING_KEY: "" }))).toHaveLength(2);
  });

  it("refuses secrets shorter than their minimums (API keys 32 characters in production, 32-byte secret and seeds)", () => {
    const problems = secretProblems(
      withVars({
        API_KEYS: `alice:${"k".repeat(31)}`,
        MINER_TOKEN_SECRET: "x".repeat(31),
        PAYLOAD_KEY_SEEDS: `1:${hex(31)}`,
        ADMIN_SECRET: "s".repeat(31),
        ROUTER_SIGNING_KEY: `0x${hex(31)}`,
      }),
    );
    expect(problems).toEqual([
      "API_KEYS entry 1 (alice) is shorter than 32 characters",
      "MINER_TOKEN_SECRET is shorter than 32 bytes",
      "PAYLOAD_KEY_SEEDS version 1 is shorter than 32 bytes",
      "ADMIN_SECRET is shorter than 32 bytes",
      expect.stringMatching(/^ROUTER_SIGNING_KEY is not 32 bytes of hex/),
    ]);
    // A weak admin secret is weak in development as well.
    expect(secretProblems(withVars({ ROUTER_ENV: "development", ADMIN_SECRET: "admin" }))).toEqual([
      "ADMIN_SECRET is shorter than 32 bytes",
    ]);
  });

  it("refuses malformed values: no owner, owner `*`, spaces, a bad seed, a version twice, a repeated key", () => {
    for (const API_KEYS of ["just-a-key", `*:${"k".repeat(32)}`, `alice:${"k".repeat(20)} ${"k".repeat(20)}`]) {
      expect(secretProblems(withVars({ API_KEYS })), API_KEYS).toEqual([expect.stringMatching(/^API_KEYS entry 1 is not `owner:key`/)]);
    }
    expect(secretProblems(withVars({ API_KEYS: `a:${"k".repeat(32)},b:${"k".repeat(32)}` }))).toEqual([
      "API_KEYS entry 2 repeats another entry's key",
    ]);
    expect(secretProblems(withVars({ PAYLOAD_KEY_SEEDS: `one:${hex(32)}` }))).toEqual([expect.stringMatching(/malformed/)]);
    expect(secretProblems(withVars({ PAYLOAD_KEY_SEEDS: `1:${hex(32)},1:${hex(40)}` }))).toEqual([
      "PAYLOAD_KEY_SEEDS lists a version twice",
    ]);
    // Not a secp256k1 scalar: zero, the group order and above, non-hex.
    for (const ROUTER_SIGNING_KEY of [`0x${"00".repeat(32)}`, `0x${"ff".repeat(32)}`, "zz".repeat(32)]) {
      expect(secretProblems(withVars({ ROUTER_SIGNING_KEY })), ROUTER_SIGNING_KEY).toHaveLength(1);
    }
    expect(secretProblems(withVars({ ROUTER_SIGNING_KEY: hex(32).toUpperCase() }))).toEqual([]);
  });

  it("refuses the owner names the router's keyless routes run as (trial, x402), in development too", () => {
    for (const owner of [TRIAL_OWNER, X402_OWNER]) {
      for (const ROUTER_ENV of ["production", "development"]) {
        expect(secretProblems(withVars({ ROUTER_ENV, API_KEYS: `${owner}:${"k".repeat(32)}` }))).toEqual([
          `API_KEYS entry 1 uses the reserved owner name ${owner}`,
        ]);
      }
    }
  });

  it("refuses the once-committed development values in production and accepts them only under ROUTER_ENV=development", () => {
    const published = {
      API_KEYS: "dev:dev-key",
      MINER_TOKEN_SECRET: "dev-miner-token-secret-change-me",
      PAYLOAD_KEY_SEEDS: "1:c3e84a4ff4c4fde145f254cd82bf885fbc0acc7569b4818d7ac67082e6f1423a",
      ADMIN_SECRET: "dev-miner-token-secret-change-me",
      // anvil's account 0: every local chain prints it.
      ROUTER_SIGNING_KEY: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    };
    expect(secretProblems(withVars(published))).toEqual([
      "API_KEYS entry 1 (dev) is a published development key",
      "MINER_TOKEN_SECRET is the published development secret",
      "PAYLOAD_KEY_SEEDS version 1 is the published development seed",
      "ADMIN_SECRET is a published development value",
      "ROUTER_SIGNING_KEY is a published development key",
    ]);
    // Anything but the exact word is production.
    expect(secretProblems(withVars({ ...published, ROUTER_ENV: "Development" }))).toHaveLength(5);
    expect(secretProblems(withVars({ ...published, ROUTER_ENV: "development" }))).toEqual([]);
  });

  it("the unit pool's own router runs with secrets that pass", () => {
    expect(secretProblems(env)).toEqual([]);
  });
});

describe("internal faults in delegate / validate / factcheck replicas", () => {
  afterEach(() => vi.restoreAllMocks());

  it("record a generic message as the replica's evidence and log the details with the request id", async () => {
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    const inner = "SQLITE_CORRUPT: database disk image is malformed at /var/lib/router/state.sqlite";
    const broken = {
      idFromName: (name: string) => env.SESSION_QUEUE.idFromName(name),
      get: () => ({
        submit: () => Promise.reject(new Error(inner)),
      }),
    } as unknown as Env["SESSION_QUEUE"];
    const req = { input: { prompt: "hi", prompt_type: 1 }, params: {}, stream: false, timeout_s: 5, owner: "dev" };
    const runs = await runReplicas(
      { ...env, SESSION_QUEUE: broken },
      [{ session_id: "s1", configured: true }],
      req as never,
      "delegate",
      "req-123",
    );
    expect(runs[0].error).toEqual({ code: "internal_error", message: "internal error" });
    expect(JSON.stringify(runs)).not.toContain("SQLITE");
    expect(logged).toHaveBeenCalledWith(expect.stringContaining("request req-123"), expect.objectContaining({ message: inner }));
  });
});

// Issue 12: the deployment identity every miner signature is bound to (durable-objects/deployment.ts). A router
// with a malformed one refuses to serve (middleware/config-guard.ts) rather than sign under a domain nobody meant.
describe("deployment identity", () => {
  const vars = (v: Partial<Pick<Env, "ROUTER_NAME" | "ROUTER_ADDRESS" | "CHAIN_ID" | "ROUTER_ENV">>) => ({
    ROUTER_NAME: "r",
    ROUTER_ADDRESS: "",
    CHAIN_ID: "31337",
    ROUTER_ENV: "development",
    ...v,
  });

  it("names the router, its chain and its verifying address in the signing domain", () => {
    const address = `0x${"AB".repeat(20)}`;
    expect(routerIdentity(vars({ ROUTER_ADDRESS: address, CHAIN_ID: "8453" }), "https://r.example")).toEqual({
      name: "r",
      chain_id: 8453,
      address: address.toLowerCase(),
      origin: "https://r.example",
    });
    expect(deploymentDomain(vars({ ROUTER_ADDRESS: address, CHAIN_ID: "8453" }))).toEqual({
      name: "r",
      version: "2",
      chainId: 8453,
      verifyingContract: address.toLowerCase(),
    });
    // No address: name, version and chain id only; no chain id: the development chain.
    expect(deploymentDomain(vars({ CHAIN_ID: "" }))).toEqual({ name: "r", version: "2", chainId: DEFAULT_CHAIN_ID });
  });

  it("refuses a malformed address or chain id and an empty name; the router answers 503 for them", async () => {
    expect(deploymentProblems(vars({}))).toEqual([]);
    expect(deploymentProblems(vars({ ROUTER_ADDRESS: "0x123", CHAIN_ID: "1.5", ROUTER_NAME: " " }))).toEqual([
      expect.stringMatching(/^ROUTER_NAME /),
      expect.stringMatching(/^ROUTER_ADDRESS /),
      expect.stringMatching(/^CHAIN_ID /),
    ]);
    for (const CHAIN_ID of ["0", "-1", "abc", "1e400"]) expect(deploymentProblems(vars({ CHAIN_ID }))).toHaveLength(1);
    // In production the address is required: without it two deployments could share a signing domain.
    expect(deploymentProblems(vars({ ROUTER_ENV: "production" }))).toEqual([expect.stringMatching(/^ROUTER_ADDRESS is empty/)]);
    expect(deploymentProblems(vars({ ROUTER_ENV: "production", ROUTER_ADDRESS: `0x${"ab".repeat(20)}` }))).toEqual([]);
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request("https://router.test/api/v1/ping"), { ...env, CHAIN_ID: "zero" }, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: { code: "configuration_error", details: { variables: ["CHAIN_ID"] } } });
  });
});
