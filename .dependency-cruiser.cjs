// Import rules of the house (npm run lint): arrows point one way, workers/ → durable-objects/ → shared/, and no
// import circle anywhere. `npx depcruise --output-type dot …` draws the graph.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "An import circle (type-only imports included) makes the order of modules matter and the house hard to change.",
      from: {},
      to: { circular: true },
    },
    {
      name: "durable-objects-not-to-workers",
      severity: "error",
      comment: "Durable Objects do not depend on the Worker: Env is generated (worker-configuration.d.ts), stubs live beside the objects.",
      from: { path: "^durable-objects/" },
      to: { path: "^workers/" },
    },
    {
      name: "shared-only-shared",
      severity: "error",
      comment: "shared/ is the contract every side imports; it imports no side.",
      from: { path: "^shared/" },
      to: { path: "^(workers|durable-objects|miner-agent|test|bench|scripts)/" },
    },
    {
      name: "miner-agent-only-shared",
      severity: "error",
      comment: "The miner agent is its own package: it imports shared/ (bundled in) and nothing else of the repository.",
      from: { path: "^miner-agent/" },
      to: { path: "^(workers|durable-objects|test|bench|scripts)/" },
    },
    {
      name: "sdk-only-shared",
      severity: "error",
      comment: "The client SDK is its own package: it imports shared/ (bundled in) and nothing else of the repository.",
      from: { path: "^sdk/" },
      to: { path: "^(workers|durable-objects|miner-agent|test|bench|scripts|chain|portal)/" },
    },
    {
      name: "portal-only-shared",
      comment: "The portal's browser code (portal/src, bundled into static assets) imports shared/ and nothing else of the repository.",
      severity: "error",
      from: { path: "^portal/" },
      to: { path: "^(workers|durable-objects|miner-agent|test|bench|scripts|chain)/" },
    },
    {
      name: "nobody-imports-miner-agent",
      severity: "error",
      comment: "Only tests, benches and scripts use the miner agent's modules.",
      from: { path: "^(workers|durable-objects|shared)/" },
      to: { path: "^miner-agent/" },
    },
    {
      name: "routes-not-to-routes",
      severity: "error",
      comment: "A route file never imports another; what they share lives in workers/lib/.",
      from: { path: "^workers/routes/([^/]+)\\.ts$" },
      to: { path: "^workers/routes/", pathNot: "^workers/routes/$1\\.ts$" },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      from: {},
      to: { couldNotResolve: true, pathNot: "^(cloudflare:|node:)" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)node_modules/|^\\.wrangler/|^(miner-agent|sdk)/dist/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.base.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default", "workerd"] },
    moduleSystems: ["es6", "cjs"],
  },
};
