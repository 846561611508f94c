import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { withConfigFile } from "../../miner-agent/src/config-file.ts";
import { parseCliArgs, UsageError } from "../../miner-agent/src/options.ts";
import { printStatus, type StatusSnapshot, statusLine } from "../../miner-agent/src/status.ts";
import { tempDir } from "../helpers/network.ts";

// The miner agent's config file and status file (issue 17), without a router: what `miner-agent` reads before it
// starts and what `miner-agent status` prints. test/integration/packages.test.ts runs both in the installed package.

function config(body: unknown): string {
  const file = join(tempDir("miner-config"), "config.json");
  writeFileSync(file, typeof body === "string" ? body : JSON.stringify(body));
  return file;
}

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseCliArgs(withConfigFile(argv, env).argv, env);

describe("config file", () => {
  it("supplies options that flags override", () => {
    const file = config({ router: "http://router.example:8787", concurrency: 3, quiet: true, "log-format": "json", name: "rack-1" });
    const opts = parse(["--config", file, "--concurrency", "2"]);
    expect(opts).toMatchObject({ router: "http://router.example:8787", concurrency: 2, quiet: true, logFormat: "json", name: "rack-1" });
    // $MINER_CONFIG names it when no flag does; `false` leaves a switch off.
    expect(parse([], { MINER_CONFIG: config({ quiet: false, threads: 1 }) })).toMatchObject({ quiet: false, threads: 1 });
  });

  it("refuses what it cannot use, naming the file", () => {
    expect(() => parse(["--config", config("{not json")])).toThrow(UsageError);
    expect(() => parse(["--config", config([1, 2])])).toThrow(/expected a JSON object/);
    expect(() => parse(["--config", config({ concurrency: { n: 2 } })])).toThrow(/concurrency must be a string, a number or a boolean/);
    expect(() => parse(["--config", config({ "no-such-option": 1 })])).toThrow(/Unknown option '--no-such-option'/);
    expect(() => parse(["--config", config({ concurrency: 0 })])).toThrow(/--concurrency/);
    expect(() => parse(["--config", join(tempDir("miner-config"), "missing.json")])).toThrow(/config file .*missing\.json/);
    expect(() => parse(["--config"])).toThrow(/--config: expected a file path/);
  });
});

describe("status file", () => {
  const snapshot: StatusSnapshot = {
    pid: process.pid,
    version: "0.1.0",
    started_at: new Date(Date.now() - 60_000).toISOString(),
    updated_at: new Date().toISOString(),
    router: "http://127.0.0.1:8787",
    address: "0x0000000000000000000000000000000000000001",
    model: "edge/tiny-gpt2",
    device: "cpu",
    state: "serving",
    sessions: 2,
    running: 1,
    queued: 0,
    tasks_done: 12,
    tokens_done: 96,
    tokens_per_s: 41.5,
    balance: 1_250_000,
    reputation: 0.875,
  };

  it("lives beside the key file unless told otherwise", () => {
    expect(parseCliArgs(["--key-file", "/srv/miner/key.json"], {}).statusFile).toBe("/srv/miner/status.json");
    expect(parseCliArgs(["--status-file", "/run/m.json"], {}).statusFile).toBe("/run/m.json");
  });

  it("is printed by `miner-agent status`: running, gone, or never started", () => {
    expect(statusLine(snapshot)).toBe(
      "serving · 2 session(s) · 1 running · 12 task(s) done · 41.5 tok/s · balance 1250000 tokens · reputation 0.875",
    );
    const dir = tempDir("miner-status");
    const file = join(dir, "status.json");
    const lines: string[] = [];
    expect(printStatus(file, false, (l) => lines.push(l))).toBe(1);
    expect(lines[0]).toMatch(/no miner-agent is running/);

    writeFileSync(file, JSON.stringify(snapshot));
    lines.length = 0;
    expect(printStatus(file, true, (l) => lines.push(l))).toBe(0);
    expect(JSON.parse(lines[0])).toMatchObject({ alive: true, tasks_done: 12, reputation: 0.875 });

    // A pid that no longer runs: the last status, and exit 1.
    writeFileSync(file, JSON.stringify({ ...snapshot, pid: 2 ** 22 + 17 }));
    lines.length = 0;
    expect(printStatus(file, false, (l) => lines.push(l))).toBe(1);
    expect(lines[0]).toMatch(/^not running .* 12 task\(s\) done/);
  });
});
