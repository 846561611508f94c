#!/usr/bin/env node
// The `miner-agent` command. Installed from its package it runs the build (dist/: plain JavaScript with shared/
// bundled in, for Node 20 and 22; `npm run build:packages`). Inside the repository, where src/ sits beside it, it
// runs the TypeScript sources directly (Node ≥ 22.18 strips types), so a change needs no rebuild.
import { existsSync } from "node:fs";

const source = new URL("../src/cli.ts", import.meta.url);
await import(existsSync(source) ? source.href : "../dist/miner-agent.js");
