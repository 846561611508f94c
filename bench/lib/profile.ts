import { readFileSync } from "node:fs";

// Samples the Worker's and its Durable Objects' JavaScript CPU through workerd's DevTools inspector (the
// Profiler domain), and sums self time by function: the router-side half of "where the time goes".

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

export interface Profiler {
  /**
   * Self time: in all, by function (with its module), and by module; `inclusive`: the project's own functions by
   * the time spent in them and everything they called (a handler's whole cost, runtime calls included).
   */
  stop(): Promise<{
    totalMs: number;
    top: { name: string; ms: number }[];
    byModule: { name: string; ms: number }[];
    inclusive: { name: string; ms: number }[];
  }>;
}

/**
 * Which source module a line of the bundle belongs to: esbuild heads each module's code with a `// path`
 * comment. Returns "node_modules/<package>" or the project file.
 */
function moduleOfLine(bundlePath: string): (line: number) => string {
  const marks: [number, string][] = [];
  readFileSync(bundlePath, "utf8")
    .split("\n")
    .forEach((text, i) => {
      const m = /^\/\/ (\S+\.(?:m?js|ts))$/.exec(text);
      if (m) marks.push([i, m[1].replace(/^(node_modules\/(?:@[^/]+\/)?[^/]+).*$/, "$1")]);
    });
  return (line) => {
    let lo = 0;
    let hi = marks.length - 1;
    let found = "(runtime)";
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (marks[mid][0] <= line) {
        found = marks[mid][1];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  };
}

/** Starts sampling on every inspectable worker of the runtime; `bundlePath` maps samples to source modules. */
export async function startProfiler(inspectorPort: number, bundlePath: string): Promise<Profiler> {
  const moduleAt = moduleOfLine(bundlePath);
  const bundleName = bundlePath.split("/").pop()!;
  const list = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json()) as { webSocketDebuggerUrl: string; title?: string }[];
  const sockets = await Promise.all(
    list.map(
      (t) =>
        new Promise<WebSocket>((res, rej) => {
          const ws = new WebSocket(t.webSocketDebuggerUrl);
          ws.addEventListener("open", () => res(ws), { once: true });
          ws.addEventListener("error", () => rej(new Error(`inspector ${t.webSocketDebuggerUrl} refused`)), { once: true });
        }),
    ),
  );
  let id = 0;
  const send = (ws: WebSocket, method: string, params: object = {}) =>
    // biome-ignore lint/suspicious/noExplicitAny: DevTools protocol results, read field by field
    new Promise<any>((res) => {
      const my = ++id;
      const onMsg = (ev: MessageEvent) => {
        const m = JSON.parse(String(ev.data));
        if (m.id !== my) return;
        ws.removeEventListener("message", onMsg);
        res(m.result);
      };
      ws.addEventListener("message", onMsg);
      ws.send(JSON.stringify({ id: my, method, params }));
    });
  for (const ws of sockets) {
    await send(ws, "Profiler.enable");
    await send(ws, "Profiler.setSamplingInterval", { interval: 200 });
    await send(ws, "Profiler.start");
  }
  return {
    async stop() {
      const self = new Map<string, number>();
      const byModule = new Map<string, number>();
      const inclusive = new Map<string, number>();
      let totalMs = 0;
      for (const ws of sockets) {
        const { profile } = await send(ws, "Profiler.stop");
        ws.close();
        const nodes = profile.nodes as ProfileNode[];
        const samples = (profile.samples as number[]).length;
        const ms = (profile.endTime - profile.startTime) / 1000;
        const perSample = samples ? ms / samples : 0;
        const byId = new Map(nodes.map((n) => [n.id, n]));
        // Depth first from the root, with the project functions on the current stack (each counted once per sample).
        const walk = (n: ProfileNode, stack: Set<string>) => {
          const name = n.callFrame.functionName || "(anonymous)";
          const url = n.callFrame.url;
          const where = url.endsWith(bundleName) ? moduleAt(n.callFrame.lineNumber) : url ? `(${url.slice(-40)})` : "(runtime)";
          const key = `${name} [${where}]`;
          const own = url.endsWith(bundleName) && !where.startsWith("node_modules/");
          const here = own && !stack.has(key) ? new Set(stack).add(key) : stack;
          if (name !== "(idle)" && name !== "(program)") {
            const t = (n.hitCount ?? 0) * perSample;
            totalMs += t;
            self.set(key, (self.get(key) ?? 0) + t);
            byModule.set(where, (byModule.get(where) ?? 0) + t);
            for (const f of here) inclusive.set(f, (inclusive.get(f) ?? 0) + t);
          }
          for (const c of n.children ?? []) walk(byId.get(c)!, here);
        };
        const childIds = new Set(nodes.flatMap((n) => n.children ?? []));
        for (const root of nodes.filter((n) => !childIds.has(n.id))) walk(root, new Set());
      }
      const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).map(([name, ms]) => ({ name, ms }));
      return {
        totalMs,
        top: sorted(self).slice(0, 25),
        byModule: sorted(byModule).slice(0, 25),
        inclusive: sorted(inclusive).slice(0, 30),
      };
    },
  };
}
