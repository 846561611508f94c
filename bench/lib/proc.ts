import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";

// Process CPU time from /proc (utime + stime), and the machine's load, which every figure is printed beside.

const TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

/** CPU ms (user + system) a live process has used so far; 0 when it is gone. */
export function cpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS;
  } catch {
    return 0;
  }
}

/** Total CPU ms of several processes. */
export const cpuOf = (pids: (number | undefined)[]): number => pids.reduce<number>((n, p) => n + cpuMs(p), 0);

/** "load 1.23 / 1.50 / 1.70" (1, 5, 15 min), as uptime prints it. */
export const loadLine = (): string =>
  `load ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" / ")}`;

/** The machine's workerd processes, with their parent and process group (from /proc). */
export function workerdProcesses(): { pid: number; ppid: number; group: number }[] {
  const out: { pid: number; ppid: number; group: number }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (!stat.includes("(workerd)")) continue;
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.push({ pid: Number(entry), ppid: Number(f[1]), group: Number(f[2]) });
    } catch {}
  }
  return out;
}
