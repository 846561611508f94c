import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { UsageError } from "./options.ts";

// A config file as well as flags, for services: a JSON object whose keys are the long option names, e.g.
//   { "router": "https://router.example", "concurrency": 2, "name": "rack-3", "log-format": "json" }
// Its settings come first and the command line after them, so a flag overrides the file (options.ts parses both
// together, with the same checks). Read from `--config <path>`, else $MINER_CONFIG, else ~/.miner-agent/config.json
// when that exists.

export function defaultConfigFile(): string {
  return join(homedir(), ".miner-agent", "config.json");
}

/** `argv` with the config file's settings put in front; the path read, if any. */
export function withConfigFile(argv: string[], env: NodeJS.ProcessEnv = process.env): { argv: string[]; path: string | undefined } {
  const path = configPath(argv, env);
  if (!path) return { argv, path };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new UsageError(`config file ${path}: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new UsageError(`config file ${path}: expected a JSON object`);
  const args: string[] = [];
  for (const [key, value] of Object.entries(raw)) {
    if (key === "config" || !/^[a-z][a-z0-9-]*$/.test(key)) throw new UsageError(`config file ${path}: unknown setting ${key}`);
    if (value === false || value === null) continue;
    if (value === true) args.push(`--${key}`);
    else if (typeof value === "string" || typeof value === "number") args.push(`--${key}`, String(value));
    else throw new UsageError(`config file ${path}: ${key} must be a string, a number or a boolean`);
  }
  return { argv: [...args, ...argv], path };
}

function configPath(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--config") {
      if (argv[i + 1] === undefined) throw new UsageError("--config: expected a file path");
      return argv[i + 1];
    }
    if (argv[i].startsWith("--config=")) return argv[i].slice("--config=".length);
  }
  if (env.MINER_CONFIG) return env.MINER_CONFIG;
  const def = defaultConfigFile();
  return existsSync(def) ? def : undefined;
}
