import { cpSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { build } from "esbuild";

// `npm run build:packages`: the publishable packages as plain JavaScript, so they run on Node 20 and 22 outside
// this repository. The repository runs their TypeScript sources directly (Node ≥ 22.18 strips types); a published
// package cannot: its bin must be JavaScript, and shared/ (the protocol, signing, payload crypto) lies outside the
// package folder, so it is bundled in. npm dependencies stay external: they are the packages' declared
// `dependencies`, installed beside them (onnxruntime-node's native binaries cannot be bundled anyway).
// `node scripts/build-packages.ts miner-agent` builds one.

const ROOT = resolve(import.meta.dirname, "..");
/** The oldest Node both packages promise to run on (their `engines`). */
const TARGET = "node20";

const common = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: TARGET,
  packages: "external",
  logLevel: "warning",
  legalComments: "none",
} as const;

async function buildMinerAgent(): Promise<void> {
  const out = join(ROOT, "miner-agent/dist");
  rmSync(out, { recursive: true, force: true });
  await build({
    ...common,
    entryPoints: { "miner-agent": join(ROOT, "miner-agent/src/cli.ts") },
    outdir: out,
    // The engine, the model builder and the test-only miners are imported lazily (`--help` answers at once):
    // splitting keeps them in their own chunks.
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
  });
  // The builtin embedder's trained weights: miner-agent/src/model/embedding.ts builds its ONNX from them.
  for (const f of ["manifest.json", "vocab.txt", "embeddings.bin"]) cpSync(join(ROOT, "models/embed", f), join(out, "models/embed", f));
}

async function buildSdk(): Promise<void> {
  const out = join(ROOT, "sdk/dist");
  rmSync(out, { recursive: true, force: true });
  await build({ ...common, platform: "neutral", entryPoints: { index: join(ROOT, "sdk/src/index.ts") }, outdir: out });
  // Type declarations: one .d.ts tree from tsc (sdk/tsconfig.json emits only declarations).
  const { execFileSync } = await import("node:child_process");
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "sdk/tsconfig.json")], {
    stdio: "inherit",
  });
}

const builders: Record<string, () => Promise<void>> = { "miner-agent": buildMinerAgent, sdk: buildSdk };
const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(builders)) {
  const run = builders[name];
  if (!run) throw new Error(`unknown package ${name}; expected one of ${Object.keys(builders).join(", ")}`);
  const t0 = Date.now();
  await run();
  console.log(`built ${name} in ${Date.now() - t0} ms`);
}
