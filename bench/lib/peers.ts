import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { freePort, ROOT } from "../../test/helpers/network.ts";

// The peers of the router benchmark, each its own process: the instant mock OpenAI server, and the Portkey AI
// gateway (@portkey-ai/gateway, Hono on Node) in front of it.

export interface Peer {
  url: string;
  port: number;
  pid: number;
  stop(): void;
}

async function waitHttp(url: string, child: ChildProcess, out: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${url}: process exited ${child.exitCode}:\n${out()}`);
    try {
      await fetch(url);
      return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer:\n${out()}`);
}

function start(args: string[], port: number, probe: string): Promise<Peer> {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  // Never outlive the bench, whichever way it ends.
  process.once("exit", () => child.kill("SIGKILL"));
  let out = "";
  child.stdout!.on("data", (d) => (out = (out + d).slice(-8000)));
  child.stderr!.on("data", (d) => (out = (out + d).slice(-8000)));
  const url = `http://127.0.0.1:${port}`;
  return waitHttp(`${url}${probe}`, child, () => out).then(() => ({
    url,
    port,
    pid: child.pid!,
    stop: () => child.kill("SIGKILL"),
  }));
}

export async function startMock(): Promise<Peer> {
  const port = await freePort();
  return start([join(ROOT, "bench/lib/mock-openai.ts"), `--port=${port}`], port, "/");
}

/** The gateway as its README starts it (headless: no console UI), on a free port instead of 8790. */
export async function startPortkey(): Promise<Peer> {
  const port = await freePort();
  return start([join(ROOT, "node_modules/@portkey-ai/gateway/build/start-server.js"), `--port=${port}`, "--headless"], port, "/");
}

/** The headers that route a Portkey request to the mock as an OpenAI provider. */
export const portkeyHeaders = (mock: Peer): Record<string, string> => ({
  "x-portkey-provider": "openai",
  "x-portkey-custom-host": `${mock.url}/v1`,
  authorization: "Bearer sk-mock",
});
