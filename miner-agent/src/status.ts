import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { MinerAgent } from "./agent.ts";
import { describeError, type Logger } from "./log.ts";

// What a running agent is doing, in two places: a status file (JSON, rewritten every few seconds) that
// `miner-agent status` reads from another shell or a service manager, and a live line on the terminal. Earnings and
// reputation are the router's figures (GET /api/v1/miners/:address/ledger, which takes a client key): shown when
// `--api-key` is given, otherwise left out.

const WRITE_MS = 2_000;
const LEDGER_MS = 15_000;
const LINE_MS = 1_000;

export interface StatusSnapshot {
  pid: number;
  version: string;
  started_at: string;
  updated_at: string;
  router: string;
  address: string;
  model: string;
  device: string;
  state: "serving" | "stopping";
  sessions: number;
  running: number;
  queued: number;
  tasks_done: number;
  tokens_done: number;
  /** Recent decode speed, tokens/s of inference (undefined before the first task). */
  tokens_per_s?: number;
  /** From the router's ledger (only with --api-key): balance and stake in tokens, the reputation score (0–1). */
  balance?: number;
  stake?: number;
  reputation?: number;
}

export interface StatusReporterOptions {
  agent: MinerAgent;
  file: string;
  version: string;
  router: string;
  address: string;
  model: string;
  device: string;
  apiKey: string | undefined;
  log: Logger;
  /** Draw the live line on stderr (a terminal, text logs, not --quiet). */
  liveLine: boolean;
}

/** Whether the live line is on screen (a log line first clears it: `clearLiveLine`). */
let lineDrawn = false;

/** Clears the live line so a log line does not run into it; the next tick draws it again under the line. */
export function clearLiveLine(): void {
  if (!lineDrawn) return;
  process.stderr.write("\r\x1b[2K");
  lineDrawn = false;
}

/** Starts writing the status file (and drawing the live line); returns the stop function. */
export function startStatusReporter(opts: StatusReporterOptions): { stop(state?: "stopping"): void } {
  const startedAt = new Date().toISOString();
  let ledger: Pick<StatusSnapshot, "balance" | "stake" | "reputation"> = {};
  let state: StatusSnapshot["state"] = "serving";
  let ledgerWarned = false;
  const snapshot = (): StatusSnapshot => {
    const { agent } = opts;
    return {
      pid: process.pid,
      version: opts.version,
      started_at: startedAt,
      updated_at: new Date().toISOString(),
      router: opts.router,
      address: opts.address,
      model: opts.model,
      device: opts.device,
      state,
      sessions: agent.sessionIds.length,
      running: agent.runner.running,
      queued: agent.runner.queued,
      tasks_done: agent.stats.tasksDone,
      tokens_done: agent.stats.tokensDone,
      tokens_per_s: agent.stats.tokensPerSecond(),
      ...ledger,
    };
  };
  const write = () => {
    try {
      writeStatusFile(opts.file, snapshot());
    } catch (err) {
      opts.log.warn(`cannot write status file ${opts.file}: ${describeError(err)}`);
    }
  };
  const pollLedger = async () => {
    if (!opts.apiKey) return;
    try {
      ledger = await fetchLedger(opts.router, opts.address, opts.apiKey);
    } catch (err) {
      if (!ledgerWarned) opts.log.warn(`cannot read earnings from the router: ${describeError(err)}`);
      ledgerWarned = true;
    }
  };
  const draw = () => {
    const cols = process.stderr.columns && process.stderr.columns > 20 ? process.stderr.columns : 120;
    process.stderr.write(`\r\x1b[2K${statusLine(snapshot()).slice(0, cols - 1)}`);
    lineDrawn = true;
  };
  write();
  void pollLedger();
  const timers = [setInterval(write, WRITE_MS), setInterval(() => void pollLedger(), LEDGER_MS)];
  if (opts.liveLine) timers.push(setInterval(draw, LINE_MS));
  for (const t of timers) t.unref();
  return {
    stop(next) {
      for (const t of timers) clearInterval(t);
      clearLiveLine();
      if (next) {
        state = next;
        write();
      } else {
        rmSync(opts.file, { force: true });
      }
    },
  };
}

/** One line: what the agent has done and earned. */
export function statusLine(s: StatusSnapshot): string {
  const parts = [
    `${s.state}`,
    `${s.sessions} session(s)`,
    `${s.running} running`,
    `${s.tasks_done} task(s) done`,
    s.tokens_per_s === undefined ? "– tok/s" : `${s.tokens_per_s} tok/s`,
  ];
  // The ledger's balance: rewards (the tokens the tasks charged, shared by agreeing miners) less slashes.
  if (s.balance !== undefined) parts.push(`balance ${s.balance} tokens`);
  if (s.reputation !== undefined) parts.push(`reputation ${s.reputation.toFixed(3)}`);
  return parts.join(" · ");
}

function writeStatusFile(file: string, s: StatusSnapshot): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
}

async function fetchLedger(
  router: string,
  address: string,
  apiKey: string,
): Promise<Pick<StatusSnapshot, "balance" | "stake" | "reputation">> {
  const res = await fetch(`${router}/api/v1/miners/${address}/ledger?limit=1`, {
    headers: { authorization: `Bearer ${apiKey}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`GET /miners/${address}/ledger: HTTP ${res.status}`);
  const body = (await res.json()) as { balance?: unknown; stake?: unknown; reputation?: { score?: unknown } | null };
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
  return { balance: num(body.balance), stake: num(body.stake), reputation: num(body.reputation?.score) };
}

/** `miner-agent status`: prints the running agent's status file; exit 0 while it runs, 1 otherwise. */
export function printStatus(file: string, json: boolean, out: (line: string) => void): number {
  let s: StatusSnapshot;
  try {
    s = JSON.parse(readFileSync(file, "utf8")) as StatusSnapshot;
  } catch {
    out(json ? JSON.stringify({ alive: false, file }) : `no miner-agent is running (no status file ${file})`);
    return 1;
  }
  const alive = isAlive(s.pid);
  const ageS = Math.round((Date.now() - Date.parse(s.updated_at)) / 1000);
  if (json) {
    out(JSON.stringify({ ...s, alive, file, age_s: ageS }));
    return alive ? 0 : 1;
  }
  if (!alive) {
    out(`not running (last seen ${s.updated_at}, pid ${s.pid}); last status: ${statusLine(s)}`);
    return 1;
  }
  out(`miner-agent ${s.version} (pid ${s.pid}) since ${s.started_at}, updated ${ageS} s ago`);
  out(`router    ${s.router}`);
  out(`address   ${s.address}`);
  out(`model     ${s.model} on ${s.device}`);
  out(`status    ${statusLine(s)}`);
  if (s.balance === undefined) out("earnings  unknown (start the agent with --api-key to show them)");
  return 0;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
