import { describe, expect, it } from "vitest";
import { HELP, parseCliArgs, UsageError } from "../../miner-agent/src/options.ts";

// `--stake` is tUSD base units: staked on chain before registering when the router has a chain (miner-agent/src/
// stake.ts, test/integration/stake-chain.test.ts), declared otherwise; the router's MIN_STAKE gate is tested in
// test/unit/reputation.
describe("--stake", () => {
  it("defaults to 0, parses a whole number of base units and rejects anything else", () => {
    expect(parseCliArgs([], {}).stake).toBe(0);
    expect(parseCliArgs(["--stake", "2500"], {}).stake).toBe(2500);
    for (const bad of ["-1", "1.5", "lots"]) expect(() => parseCliArgs(["--stake", bad], {})).toThrow(UsageError);
    expect(HELP).toContain("--stake <n>");
    expect(HELP).toContain("base units");
  });

  it("--chain-rpc (or MINER_CHAIN_RPC) overrides the RPC URL the router names; it must be an http(s) URL", () => {
    expect(parseCliArgs([], {}).chainRpc).toBeUndefined();
    expect(parseCliArgs(["--chain-rpc", "http://127.0.0.1:8545"], {}).chainRpc).toBe("http://127.0.0.1:8545");
    expect(parseCliArgs([], { MINER_CHAIN_RPC: "https://rpc.example" }).chainRpc).toBe("https://rpc.example");
    expect(() => parseCliArgs(["--chain-rpc", "ws://x"], {})).toThrow(UsageError);
  });
});
