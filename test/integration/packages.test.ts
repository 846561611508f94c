import { execFile } from "node:child_process";
import { copyFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as Sdk from "../../sdk/src/index.ts";
import { API_KEY, api, type Miner, MODEL_CACHE, ROOT, type Router, startMiner, startRouter, tempDir, until } from "../helpers/network.ts";
import {
  type InstalledPackages,
  installFolderEntries,
  NPM_NODE,
  nodeVersion,
  packAndInstall,
  packageVersion,
  pathFor,
  systemNode,
} from "../helpers/packages.ts";

// The packages as a stranger installs them (issue 17): `npm pack` of miner-agent and sdk, installed from the
// tarballs into an empty folder outside the repository. The installed `npx miner-agent` serves a real router under
// the machine's Node 20 and the npm `node` package's Node 22 at once — the two of them are this network's miners —
// and the installed SDK drives that network: completions whole and streamed, verified; tampered evidence refused;
// typed errors; retries; a private result opened on the client.

const run = promisify(execFile);

let pkgs: InstalledPackages;
let router: Router;
let sdk: typeof Sdk;
const freshCache = tempDir("pkg-models");
const nodes: { label: string; node: string; version: string; miner?: Miner; keyFile: string }[] = [];

/** `npx miner-agent …` in the install folder under `node`. */
function npx(node: string, args: string[], timeout = 60_000) {
  return run("npx", ["--no-install", "miner-agent", ...args], {
    cwd: pkgs.dir,
    env: { ...process.env, PATH: pathFor(node) },
    timeout,
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({
      code: err.code ?? -1,
      stdout: err.stdout ?? "",
      stderr: err.stderr ?? "",
    }),
  );
}

beforeAll(async () => {
  [pkgs, router] = await Promise.all([packAndInstall(), startRouter()]);
  sdk = (await import(pkgs.sdkEntry)) as typeof Sdk;
  for (const [label, node] of [
    ["system", systemNode()],
    ["npm node package", NPM_NODE],
  ] as const) {
    nodes.push({ label, node, version: await nodeVersion(node), keyFile: join(tempDir("pkg-miner"), "key.json") });
  }
}, 240_000);

afterAll(async () => {
  await Promise.all(nodes.map((n) => n.miner?.stop("SIGKILL")));
  await router?.stop();
  // The install (~570 MB with onnxruntime) and the built model (~100 MB) are not worth keeping in /tmp.
  for (const dir of [pkgs?.dir, pkgs && dirname(pkgs.tarballs.sdk), freshCache]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("miner-agent package", () => {
  it("installs into an empty folder from its tarball alone", () => {
    expect(installFolderEntries(pkgs.dir)).toEqual(["package.json"]);
    // What the tarball holds: the launcher, the build and package.json — no TypeScript, no shared/ sources.
    console.log(`packages: npm install of both tarballs took ${pkgs.installMs} ms`);
  });

  it("runs under Node 20 (the machine's) and Node 22 (the npm node package)", async () => {
    expect(nodes.map((n) => n.version.split(".")[0]).sort()).toEqual(["v20", "v22"]);
    for (const n of nodes) {
      const v = await npx(n.node, ["--version"]);
      expect(v, n.label).toMatchObject({ code: 0, stdout: `${packageVersion("miner-agent")}\n` });
      const doctor = await npx(n.node, ["doctor", "--router", router.url, "--key-file", n.keyFile, "--cache-dir", MODEL_CACHE]);
      expect(doctor.code, doctor.stdout + doctor.stderr).toBe(0);
      expect(doctor.stdout).toContain(`node         ${n.version}`);
      expect(doctor.stdout).toMatch(/ ok {3}router {7}http:\/\/127\.0\.0\.1:\d+ reachable/);
      expect(doctor.stdout).toMatch(/ ok {3}onnxruntime {2}providers: cpu/);
    }
    // Both serve at once: `npx miner-agent --router <url>`, each under its own Node.
    for (const n of nodes) {
      n.miner = await startMiner(router.url, {
        name: `pkg-${n.version}`,
        keyFile: n.keyFile,
        command: { file: "npx", args: ["--no-install", "miner-agent"], cwd: pkgs.dir },
        env: { PATH: pathFor(n.node) },
        // The system Node's miner builds the built-in model from the package into an empty cache (~3 s).
        args: n.label === "system" ? ["--cache-dir", freshCache] : [],
      });
    }
    await Promise.all(nodes.map((n) => n.miner!.waitFor("ready", undefined, 90_000)));
    expect(nodes[0].miner!.log()).toContain("model edge/tiny-gpt2: building");

    const s = await api(router, "/api/v1/sessions", { body: { deposit: 1_000_000, redundancy: 2, max_miners: 2 } });
    expect(s.status).toBe(201);
    await until(async () => (await api(router, `/api/v1/sessions/${s.body.id}`)).body.usage?.connected_miners?.length === 2);
    const done = await api(router, `/api/v1/completions/${s.body.id}`, { body: { prompt: "Packages", max_tokens: 6 } });
    expect(done.status).toBe(200);
    expect(done.body.consensus).toMatchObject({ method: "exact", status: "agreed" });
    const served = done.body.miners.map((m: { address: string }) => m.address).sort();
    expect(served).toEqual(nodes.map((n) => n.miner!.address()!.toLowerCase()).sort());

    // `miner-agent status` (another process) reads what the running agent is doing.
    for (const n of nodes) {
      const status = await until(async () => {
        const r = await npx(n.node, ["status", "--key-file", n.keyFile, "--log-format", "json"]);
        const body = r.code === 0 ? JSON.parse(r.stdout) : null;
        return body?.tasks_done >= 1 ? body : null;
      }, 10_000);
      expect(status).toMatchObject({ alive: true, state: "serving", router: router.url, address: n.miner!.address(), sessions: 1 });
    }
  }, 180_000);
});

describe("sdk package", () => {
  let sessionId: string;
  const client = () => new sdk.EdgeClient({ baseUrl: router.url, apiKey: API_KEY, verify: true });

  beforeAll(async () => {
    const s = await client().sessions.create({ deposit: 1_000_000, redundancy: 2, max_miners: 2 });
    sessionId = s.id;
    await until(async () => ((await client().sessions.get(sessionId)).usage?.connected_miners.length ?? 0) === 2);
  });

  it("completes whole and streamed, verifying signatures, the verdict and the receipt", async () => {
    const c = client();
    const whole = await c.completions.create({ session_id: sessionId, prompt: "Verify me", max_tokens: 8 });
    expect(whole.text.length).toBeGreaterThan(0);
    expect(whole.receipt?.tasks[0].miners).toHaveLength(2);
    const report = await c.verify(whole);
    expect(report).toMatchObject({ ok: true, problems: [], minersChecked: 2, receiptSigned: true });

    const stream = c.completions.stream({ session_id: sessionId, prompt: "Verify me", max_tokens: 8 });
    const tokens: string[] = [];
    for await (const t of stream.tokens()) tokens.push(t);
    expect(tokens.length).toBeGreaterThan(1);
    expect(tokens.join("")).toBe(whole.text); // greedy: the same text
    expect(stream.final?.receipt?.output_hash).toBe(whole.receipt?.output_hash);
  });

  it("refuses evidence that does not hold", async () => {
    /** A router in the middle that changes one thing of each answer. */
    const tampering = (edit: (answer: any) => void) =>
      new sdk.EdgeClient({
        baseUrl: router.url,
        apiKey: API_KEY,
        verify: true,
        retries: 0,
        fetch: async (input, init) => {
          const res = await fetch(input, init);
          if (!String(input).includes("/completions")) return res;
          const body = await res.json();
          edit(body);
          return new Response(JSON.stringify(body), { status: res.status, headers: res.headers });
        },
      });
    const ask = (c: Sdk.EdgeClient) => c.completions.create({ session_id: sessionId, prompt: "Tamper", max_tokens: 4 });
    const flip = (hex: string) => hex.slice(0, -3) + (hex.at(-3) === "0" ? "1" : "0") + hex.slice(-2);

    const cases: [string, (a: any) => void, RegExp][] = [
      ["text", (a) => (a.choices[0].text += "!"), /hashes to .* not the receipt's output/],
      [
        "a miner's signature",
        (a) => (a.receipt.tasks[0].miners[0].signature = flip(a.receipt.tasks[0].miners[0].signature)),
        /recovers to|unreadable/,
      ],
      ["a miner's vote", (a) => (a.receipt.tasks[0].miners[1].agreed = false), /not signed by the router|agreed/],
      ["the verdict", (a) => (a.receipt.consensus.agreed = 1), /not signed by the router/],
    ];
    for (const [what, edit, problem] of cases) {
      const err = await ask(tampering(edit)).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(sdk.VerificationError);
      expect((err as Sdk.VerificationError).message, what).toMatch(problem);
    }
    // A miner's signature over another result: re-signed receipts cannot hide it (the router's own key is not needed).
    const report = await client().verify({ receipt: undefined });
    expect(report.ok).toBe(false);
    // Without verify the same tampered answer is returned as is.
    const unverified = await tampering((a) => (a.choices[0].text += "!")).completions.create(
      { session_id: sessionId, prompt: "Tamper", max_tokens: 4 },
      { verify: false },
    );
    expect(unverified.text.endsWith("!")).toBe(true);
  });

  it("throws typed errors with the router's code and request id, and retries what is retryable", async () => {
    const c = client();
    const bad = await c.completions.create({ session_id: sessionId, prompt: "", max_tokens: 0 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(sdk.EdgeApiError);
    expect(bad).toMatchObject({ status: 400, code: "invalid_request", requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const missing = await c.sessions.get("no-such-session").catch((e: unknown) => e);
    expect(missing).toMatchObject({ status: 404, code: "session_not_found" });

    // Two 429s (rate_limited, Retry-After: 0) and then the router: three attempts, one answer.
    let attempts = 0;
    const flaky = new sdk.EdgeClient({
      baseUrl: router.url,
      apiKey: API_KEY,
      baseDelayMs: 10,
      fetch: async (input, init) => {
        if (++attempts <= 2) {
          return Response.json(
            { request_id: `r${attempts}`, error: { code: "rate_limited", message: "slow down" } },
            { status: 429, headers: { "retry-after": "0" } },
          );
        }
        return fetch(input, init);
      },
    });
    expect((await flaky.ping()).status).toBe("ok");
    expect(attempts).toBe(3);
    // Not retried: an invalid request is answered once.
    attempts = 10;
    const once = new sdk.EdgeClient({
      baseUrl: router.url,
      apiKey: "wrong-key",
      fetch: (i, n) => {
        attempts++;
        return fetch(i, n);
      },
    });
    await expect(once.info()).rejects.toMatchObject({ code: "unauthorized" });
    expect(attempts).toBe(11);
    // Nothing listening: a network error, retried (the connection never opened), then thrown.
    const down = new sdk.EdgeClient({ baseUrl: "http://127.0.0.1:9", retries: 1, baseDelayMs: 1 });
    await expect(down.ping()).rejects.toBeInstanceOf(sdk.EdgeNetworkError);
  });

  it("opens a private result on the client with the task key", async () => {
    const c = client();
    // Private tasks run only on miners the owner allowlisted for the session's keys.
    await c.payloads.allow(
      sessionId,
      nodes.map((n) => n.miner!.address()!),
    );
    const answer = await c.completions.create(
      { session_id: sessionId, prompt: "A secret", max_tokens: 6, timeout: 30, private: true },
      { version: 3 },
    );
    // The prompt was sealed here (the router got only its envelope); the router answered only the URN: the text
    // was fetched as ciphertext and opened here, and verifies.
    expect(answer.offchain).toMatchObject({ encrypted: true, sealed_by: "client", result_urn: expect.stringMatching(/^urn:edge:result:/) });
    expect(answer.choices[0].text).toBe("");
    const plain = await api(router, `/api/v3/offchain/result/${encodeURIComponent(answer.offchain!.result_urn!)}?decrypt=true`);
    expect(answer.text).toBe(plain.body);
    const stored = await fetch(`${router.url}/api/v3/offchain/result/${encodeURIComponent(answer.offchain!.result_urn!)}`, {
      headers: { authorization: `Bearer ${API_KEY}` },
    });
    expect(stored.headers.get("x-payload-encrypted")).toBe("1");
    expect(new TextDecoder().decode(await stored.arrayBuffer())).not.toContain(answer.text);
  });

  it("runs the README's example under Node 20 and Node 22", async () => {
    const example = join(pkgs.dir, "quickstart.mjs");
    copyFileSync(join(ROOT, "sdk/examples/quickstart.mjs"), example);
    try {
      for (const n of nodes) {
        const { stdout } = await run(n.node, [example], { cwd: pkgs.dir, env: { ...process.env, ROUTER_URL: router.url, API_KEY } });
        expect(stdout, n.label).toMatch(
          /^whole: {4}".+" from 0x[0-9a-f]{40}, 0x[0-9a-f]{40}\nstreamed: .+\nverified: 2 miner signatures, receipt signed: true\n$/s,
        );
      }
    } finally {
      rmSync(example);
    }
  });

  it("ships type declarations a TypeScript project compiles against", async () => {
    const consumer = join(pkgs.dir, "consumer.mts");
    const tsconfig = join(pkgs.dir, "tsconfig.json");
    writeFileSync(
      consumer,
      [
        'import { EdgeApiError, EdgeClient, type Completion, type VerificationReport } from "edge-inference-sdk";',
        'const client = new EdgeClient({ baseUrl: "http://127.0.0.1:8787", apiKey: "k", verify: true });',
        'const answer: Completion = await client.completions.create({ prompt: "hi", max_tokens: 4 });',
        "const tokens: number = answer.usage.total_tokens;",
        "const report: VerificationReport = await client.verify(answer);",
        "export const code = (e: unknown) => (e instanceof EdgeApiError ? e.code : String(tokens) + report.ok);",
        "// @ts-expect-error: max_tokens is a number",
        'await client.completions.create({ prompt: "hi", max_tokens: "4" });',
      ].join("\n"),
    );
    // skipLibCheck: checking viem's own declarations would triple the time; ours are exercised by the uses above.
    const options = {
      module: "nodenext",
      target: "es2022",
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      lib: ["es2023", "dom"],
      types: [],
    };
    writeFileSync(tsconfig, JSON.stringify({ compilerOptions: options, files: ["consumer.mts"] }));
    try {
      const tsc = await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", tsconfig]).catch((e) => e);
      expect(tsc.stdout ?? "", "tsc").toBe("");
    } finally {
      rmSync(consumer);
      rmSync(tsconfig);
    }
  });

  it("covers the other route families", async () => {
    const c = client();
    expect((await c.info()).receipt_signer).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect((await c.miners.list()).stats.online).toBe(2);
    const task = await c.tasks.get(sessionId, "1");
    expect(task).toMatchObject({ status: "closed", session_id: sessionId });
    const chat = await c.openai.chat({ model: "tiny-gpt2", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    expect(chat.object).toBe("chat.completion");
    const delegated = await c.work.delegate(1, { task_request_input: "Say hi", session_id: sessionId, max_tokens: 4 });
    expect(delegated.receipt?.kind).toBe("delegate");
    expect((await c.receipts.get(delegated.request_id)).signature).toBe(delegated.receipt?.signature);
    expect(await c.agents.discovery()).toHaveProperty("a2a.agent_cards");
    const tools = await c.agents.mcpTools();
    expect(tools.tools.map((t) => t.name)).toContain("cortensor_completions");
  });
});

describe("miner-agent package shutdown", () => {
  it("drains and stops on SIGTERM under both Nodes", async () => {
    for (const n of nodes) {
      const m = n.miner!;
      await m.stop("SIGTERM");
      // The group's signal reaches npx too, which ends by it at once; the agent under it drains, says so, exits.
      expect(m.process.exitCode === 0 || m.process.signalCode === "SIGTERM").toBe(true);
      await m.waitFor("shutdown", undefined, 20_000);
    }
  });
});
