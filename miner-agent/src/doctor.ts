import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describeError } from "./log.ts";
import type { CliOptions } from "./options.ts";
import { expandHome, loadOrCreateWallet } from "./wallet.ts";

// `miner-agent doctor`: checks what a miner needs before it is started (Node, the ONNX runtime and its execution
// providers, the model cache, the router, the wallet) and says what to fix. It changes nothing: no key is
// created, no model loaded. Exit status 0 when nothing failed (warnings allowed), 1 otherwise.

type Verdict = "ok" | "warn" | "fail";
export interface Check {
  name: string;
  verdict: Verdict;
  detail: string;
}

/** The oldest Node this package supports (package.json `engines`). */
const MIN_NODE: [number, number] = [20, 9];

export async function runDoctor(opts: CliOptions, out: (line: string) => void): Promise<number> {
  const checks = await Promise.all([
    checkNode(),
    checkOnnx(opts),
    checkTransformers(),
    checkCache(opts),
    checkRouter(opts),
    checkWallet(opts),
  ]);
  if (opts.logFormat === "json") {
    for (const c of checks) out(JSON.stringify({ event: "doctor_check", ...c }));
  } else {
    for (const c of checks)
      out(`${c.verdict === "ok" ? " ok " : c.verdict === "warn" ? "warn" : "FAIL"}  ${c.name.padEnd(12)} ${c.detail}`);
  }
  const failed = checks.filter((c) => c.verdict === "fail").length;
  if (opts.logFormat !== "json") out(failed ? `${failed} check(s) failed` : "all checks passed");
  return failed ? 1 : 0;
}

async function checkNode(): Promise<Check> {
  const [major, minor] = process.versions.node.split(".").map(Number);
  const ok = major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
  return {
    name: "node",
    verdict: ok ? "ok" : "fail",
    detail: ok
      ? `${process.version} (${process.platform}/${process.arch})`
      : `${process.version}: Node ${MIN_NODE.join(".")} or later is needed`,
  };
}

async function checkOnnx(opts: CliOptions): Promise<Check> {
  try {
    const ort = (await import("onnxruntime-node")) as { listSupportedBackends?: () => { name: string; bundled: boolean }[] };
    const backends = ort.listSupportedBackends?.() ?? [];
    const names = backends.map((b) => (b.bundled ? b.name : `${b.name} (not installed)`));
    const hasWebGpu = backends.some((b) => b.name === "webgpu" && b.bundled);
    if (opts.device === "webgpu" && !hasWebGpu) {
      return {
        name: "onnxruntime",
        verdict: "fail",
        detail: `--device webgpu, but this build has no WebGPU provider (${names.join(", ")})`,
      };
    }
    return { name: "onnxruntime", verdict: "ok", detail: `providers: ${names.join(", ") || "cpu"}` };
  } catch (err) {
    return { name: "onnxruntime", verdict: "fail", detail: `cannot load onnxruntime-node: ${describeError(err)} (reinstall the package)` };
  }
}

async function checkTransformers(): Promise<Check> {
  try {
    const t = (await import("@huggingface/transformers")) as { env?: { version?: string } };
    return { name: "transformers", verdict: "ok", detail: `transformers.js ${t.env?.version ?? "(version unknown)"}` };
  } catch (err) {
    return { name: "transformers", verdict: "fail", detail: `cannot load @huggingface/transformers: ${describeError(err)}` };
  }
}

async function checkCache(opts: CliOptions): Promise<Check> {
  const dir = expandHome(opts.cacheDir);
  const probe = join(dir, `.doctor-${process.pid}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(probe, "ok");
    await rm(probe, { force: true });
    return { name: "cache", verdict: "ok", detail: `${dir} is writable` };
  } catch (err) {
    return { name: "cache", verdict: "fail", detail: `${dir}: ${describeError(err)} (choose another with --cache-dir)` };
  }
}

async function checkRouter(opts: CliOptions): Promise<Check> {
  const t0 = Date.now();
  try {
    const res = await fetch(`${opts.router}/api/v1/ping`, { signal: AbortSignal.timeout(10_000) });
    const ms = Date.now() - t0;
    if (!res.ok) return { name: "router", verdict: "fail", detail: `${opts.router} answered HTTP ${res.status} to /api/v1/ping` };
    return { name: "router", verdict: "ok", detail: `${opts.router} reachable (${ms} ms)` };
  } catch (err) {
    return { name: "router", verdict: "fail", detail: `${opts.router} unreachable: ${describeError(err)}` };
  }
}

async function checkWallet(opts: CliOptions): Promise<Check> {
  const file = expandHome(opts.keyFile);
  // Only an existing key is opened (loadOrCreateWallet creates one when the file is missing; doctor must not).
  if (!existsSync(file)) return { name: "wallet", verdict: "ok", detail: `no key yet: ${file} is created on first start` };
  try {
    const w = await loadOrCreateWallet(file);
    if (w.insecureMode)
      return { name: "wallet", verdict: "warn", detail: `${w.address}; ${file} has mode ${w.insecureMode}: run chmod 600 on it` };
    return { name: "wallet", verdict: "ok", detail: `${w.address} (${file})` };
  } catch (err) {
    return { name: "wallet", verdict: "fail", detail: describeError(err) };
  }
}
