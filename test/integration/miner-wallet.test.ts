import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePrivateKey } from "viem/accounts";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Backoff } from "../../miner-agent/src/backoff.ts";
import { HELP, parseCliArgs, UsageError } from "../../miner-agent/src/options.ts";
import { loadOrCreateWallet, WalletError } from "../../miner-agent/src/wallet.ts";

// Miner-side units that need no router: the wallet key file, option parsing, backoff.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "miner-wallet-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("wallet key file", () => {
  it("creates a key on first run (mode 0600) and reuses it afterwards", async () => {
    const file = join(dir, "nested", "key.json");
    const first = await loadOrCreateWallet(file);
    expect(first.created).toBe(true);
    expect(first.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    const body = JSON.parse(await readFile(file, "utf8"));
    expect(body.address).toBe(first.address);
    expect(body.private_key).toMatch(/^0x[0-9a-f]{64}$/);
    expect(Number.isNaN(Date.parse(body.created_at))).toBe(false);
    if (process.platform !== "win32") expect((await stat(file)).mode & 0o777).toBe(0o600);

    const second = await loadOrCreateWallet(file);
    expect(second.created).toBe(false);
    expect(second.address).toBe(first.address);
    expect(second.insecureMode).toBeUndefined();
  });

  it("refuses a key file whose address does not match its key", async () => {
    const file = join(dir, "key.json");
    await writeFile(file, JSON.stringify({ address: "0x" + "11".repeat(20), private_key: generatePrivateKey(), created_at: "x" }), {
      mode: 0o600,
    });
    await expect(loadOrCreateWallet(file)).rejects.toBeInstanceOf(WalletError);
  });

  it("refuses garbage and flags a group-readable file", async () => {
    const bad = join(dir, "bad.json");
    await writeFile(bad, "{not json", { mode: 0o600 });
    await expect(loadOrCreateWallet(bad)).rejects.toThrow(/not valid JSON/);

    const loose = join(dir, "loose.json");
    await writeFile(loose, JSON.stringify({ private_key: generatePrivateKey() }));
    await chmod(loose, 0o644);
    const w = await loadOrCreateWallet(loose);
    if (process.platform !== "win32") expect(w.insecureMode).toBe("0644");
  });

  it("two processes racing on first run end with one key", async () => {
    const file = join(dir, "race.json");
    const [a, b] = await Promise.all([loadOrCreateWallet(file), loadOrCreateWallet(file)]);
    expect(a.address).toBe(b.address);
  });
});

describe("options", () => {
  it("has the documented defaults and env fallbacks", () => {
    const o = parseCliArgs([], { ROUTER_URL: "http://r.example:9000/", MINER_KEY_FILE: "/k.json" });
    expect(o).toMatchObject({
      router: "http://r.example:9000",
      model: undefined,
      device: "cpu",
      concurrency: 1,
      keyFile: "/k.json",
      drainMs: 10_000,
      logFormat: "text",
      quiet: false,
    });
    expect(parseCliArgs([], {}).router).toBe("http://127.0.0.1:8787");
  });

  it("parses flags and rejects bad values", () => {
    const o = parseCliArgs(
      ["--router", "https://x.dev", "--concurrency", "4", "--device", "auto", "--log-format", "json", "--quiet", "--name", "box"],
      {},
    );
    expect(o).toMatchObject({ router: "https://x.dev", concurrency: 4, device: "auto", logFormat: "json", quiet: true, name: "box" });
    for (const bad of [
      ["--concurrency", "0"],
      ["--concurrency", "2.5"],
      ["--device", "gpu"],
      ["--router", "ftp://x"],
      ["--nope"],
      ["extra"],
    ]) {
      expect(() => parseCliArgs(bad, {})).toThrow(UsageError);
    }
  });
});

describe("test-only options", () => {
  it("accept the dishonest modes and a delay, from flags or env, and stay out of --help", () => {
    expect(parseCliArgs([], {})).toMatchObject({ testDishonest: undefined, testDelayMs: 0 });
    expect(parseCliArgs(["--test-dishonest", "junk", "--test-delay-ms", "250"], {})).toMatchObject({
      testDishonest: "junk",
      testDelayMs: 250,
    });
    expect(parseCliArgs([], { MINER_TEST_DISHONEST: "silent-after-ack", MINER_TEST_DELAY_MS: "5" })).toMatchObject({
      testDishonest: "silent-after-ack",
      testDelayMs: 5,
    });
    expect(() => parseCliArgs(["--test-dishonest", "lie"], {})).toThrow(UsageError);
    expect(HELP).not.toMatch(/test-/);
  });
});

describe("backoff", () => {
  it("doubles from 250 ms to a 10 s cap with 50–100 % jitter, and resets", () => {
    const lo = new Backoff({ random: () => 0 });
    const hi = new Backoff({ random: () => 1 });
    const los = Array.from({ length: 8 }, () => lo.next());
    const his = Array.from({ length: 8 }, () => hi.next());
    expect(his).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    expect(los).toEqual(his.map((x) => x / 2));
    hi.reset();
    expect(hi.next()).toBe(250);
  });
});
