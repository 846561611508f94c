import { describe, expect, it } from "vitest";
import { HELP, parseCliArgs, UsageError } from "../../miner-agent/src/options.ts";

// The agent declares its stake at registration; the router's MIN_STAKE gate is tested in test/unit/reputation.
describe("--stake", () => {
  it("defaults to 0, parses a whole number and rejects anything else", () => {
    expect(parseCliArgs([], {}).stake).toBe(0);
    expect(parseCliArgs(["--stake", "2500"], {}).stake).toBe(2500);
    for (const bad of ["-1", "1.5", "lots"]) expect(() => parseCliArgs(["--stake", bad], {})).toThrow(UsageError);
    expect(HELP).toContain("--stake <n>");
  });
});
