import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { promisify } from "node:util";
import { ROOT, tempDir } from "./network.ts";

// The publishable packages as a stranger gets them: built (scripts/build-packages.ts), packed with `npm pack`, and
// installed from the tarballs into an empty folder outside the repository, their dependencies from the registry
// (or npm's cache). Nothing of the repository is on the installed packages' module path.

const run = promisify(execFile);

export interface InstalledPackages {
  /** The folder they are installed in (package.json + node_modules only). */
  dir: string;
  tarballs: { minerAgent: string; sdk: string };
  /** The SDK's ESM entry as installed. */
  sdkEntry: string;
  installMs: number;
}

export async function packAndInstall(): Promise<InstalledPackages> {
  await run(process.execPath, [join(ROOT, "scripts/build-packages.ts")], { cwd: ROOT });
  const packs = tempDir("packs");
  const pack = async (pkg: string) => {
    // The build just ran: --ignore-scripts skips the packages' prepack (the same build again).
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--pack-destination", packs, "--json"], {
      cwd: join(ROOT, pkg),
      env: npmEnv(),
    });
    return join(packs, (JSON.parse(stdout) as { filename: string }[])[0].filename);
  };
  const tarballs = { minerAgent: await pack("miner-agent"), sdk: await pack("sdk") };
  const dir = tempDir("packages-install");
  const t0 = Date.now();
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--no-package-lock", tarballs.minerAgent, tarballs.sdk], {
    cwd: dir,
    env: npmEnv(),
    maxBuffer: 16 * 1024 * 1024,
  });
  const installMs = Date.now() - t0;
  return { dir, tarballs, sdkEntry: join(dir, "node_modules/edge-inference-sdk/dist/index.js"), installMs };
}

/**
 * npm's environment outside the repository: onnxruntime-node's install script would download its optional CUDA
 * build from nuget.org (this machine has no GPU and no route there); the CPU build ships in the package.
 */
function npmEnv(): NodeJS.ProcessEnv {
  return { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip", npm_config_update_notifier: "false" };
}

/** Every `node` on PATH outside node_modules (the machine's own), first first. */
export function systemNode(): string {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir || dir.includes("node_modules")) continue;
    const node = join(dir, "node");
    if (existsSync(node)) return node;
  }
  throw new Error("no node outside node_modules on PATH");
}

/** The npm `node` package's binary (the repository's dev dependency, Node 22). */
export const NPM_NODE = join(ROOT, "node_modules/node/bin/node");

/** PATH on which `node` (and so `npx` and every `#!/usr/bin/env node` bin) is `node`. */
export function pathFor(node: string): string {
  const rest = (process.env.PATH ?? "").split(delimiter).filter((d) => d && !d.includes("node_modules"));
  return [dirname(node), ...rest].join(delimiter);
}

export async function nodeVersion(node: string): Promise<string> {
  return (await run(node, ["--version"])).stdout.trim();
}

/** What the install folder holds besides node_modules (nothing but its package.json). */
export function installFolderEntries(dir: string): string[] {
  return readdirSync(dir).filter((f) => f !== "node_modules");
}

export function packageVersion(pkg: string): string {
  return (JSON.parse(readFileSync(join(ROOT, pkg, "package.json"), "utf8")) as { version: string }).version;
}
