import { describe, expect, it } from "vitest";
import { ChainConfigError, caip2, chainConfig, minerStakingAbi, TOKEN_DOMAIN, testUsdAbi, viemChain } from "../../shared/chain.ts";

// The router's chain configuration (shared/chain.ts): off when CHAIN_RPC_URL is empty, an error when only half set,
// and the generated ABIs (chain/artifacts, `npm run build:contracts`) carry what the router calls.

const TOKEN = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
const STAKING = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";
const full = { CHAIN_RPC_URL: "http://127.0.0.1:8545", CHAIN_ID: "31337", TOKEN_ADDRESS: TOKEN, STAKING_ADDRESS: STAKING };

describe("chainConfig", () => {
  it("is off (null) while CHAIN_RPC_URL is empty, whatever else is set", () => {
    expect(chainConfig({})).toBeNull();
    expect(chainConfig({ ...full, CHAIN_RPC_URL: "  " })).toBeNull();
  });

  it("parses a full configuration, addresses checksummed", () => {
    const cfg = chainConfig(full);
    expect(cfg).toEqual({
      rpcUrl: "http://127.0.0.1:8545",
      chainId: 31337,
      token: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
      staking: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    });
    const chain = viemChain(cfg!);
    expect(chain.id).toBe(31337);
    expect(chain.rpcUrls.default.http).toEqual(["http://127.0.0.1:8545"]);
    expect(caip2(cfg!.chainId)).toBe("eip155:31337");
  });

  it("refuses half a configuration, naming the variable", () => {
    const cases: [Record<string, string>, string][] = [
      [{ ...full, TOKEN_ADDRESS: "" }, "TOKEN_ADDRESS"],
      [{ ...full, STAKING_ADDRESS: "0x1234" }, "STAKING_ADDRESS"],
      [{ ...full, CHAIN_ID: "zero" }, "CHAIN_ID"],
      [{ ...full, CHAIN_RPC_URL: "ws://127.0.0.1:8545" }, "CHAIN_RPC_URL"],
    ];
    for (const [vars, variable] of cases) {
      expect(() => chainConfig(vars), variable).toThrow(ChainConfigError);
      try {
        chainConfig(vars);
      } catch (err) {
        expect((err as ChainConfigError).variable).toBe(variable);
      }
    }
  });
});

describe("generated ABIs", () => {
  const names = (abi: readonly { type: string; name?: string }[], type: string) => abi.filter((e) => e.type === type).map((e) => e.name);
  it("TestUSD has EIP-3009 (both signature forms) and the EIP-712 domain", () => {
    const transfers = testUsdAbi.filter((e) => e.type === "function" && e.name === "transferWithAuthorization");
    expect(transfers.map((f) => (f as { inputs: readonly unknown[] }).inputs.length).sort()).toEqual([7, 9]);
    expect(names(testUsdAbi, "function")).toEqual(
      expect.arrayContaining([
        "authorizationState",
        "DOMAIN_SEPARATOR",
        "mint",
        "receiveWithAuthorization",
        "cancelAuthorization",
        "version",
      ]),
    );
    expect(names(testUsdAbi, "event")).toEqual(expect.arrayContaining(["Transfer", "AuthorizationUsed", "AuthorizationCanceled"]));
    expect(TOKEN_DOMAIN).toEqual({ name: "Test USD", version: "1" });
  });
  it("MinerStaking has stake, unbonding and slashing", () => {
    expect(names(minerStakingAbi, "function")).toEqual(
      expect.arrayContaining([
        "stake",
        "requestUnstake",
        "withdraw",
        "stakeOf",
        "unbondingOf",
        "slash",
        "slashBatch",
        "setSlasher",
        "slashers",
        "unbondingDelay",
        "token",
      ]),
    );
    expect(names(minerStakingAbi, "event")).toEqual(expect.arrayContaining(["Staked", "UnstakeRequested", "Withdrawn", "Slashed"]));
  });
});
