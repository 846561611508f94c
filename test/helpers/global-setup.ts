import { execFileSync } from "node:child_process";
import { ROOT } from "./network.ts";

/**
 * The integration project's global setup (vitest.config.ts): builds the portal bundle once for the run, as
 * wrangler.toml's [build] step would before each `wrangler dev`, and tells startRouter (network.ts) to skip that
 * step. Test files run in forks that inherit this environment.
 */
export default function setup(): void {
  execFileSync("npm", ["run", "--silent", "build:portal"], { cwd: ROOT, stdio: "inherit" });
  process.env.TEST_PORTAL_PREBUILT = "1";
}
