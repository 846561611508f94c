import { fx, mean, pct } from "./load.ts";

// Where each millisecond of a k = 1 task goes, from three clocks on one machine: the client's (epoch ms with
// sub-ms precision), the SessionQueue's task view (Date.now() in workerd: whole ms, read when an event starts)
// and the miner's bench-only trace (task_done's `trace`, MINER_BENCH_TRACE=1). Nothing here costs production
// anything: the task view is the public GET /api/v1/tasks/:sid/:tid, read after the timed loop.

export interface TaskSample {
  sent: number;
  received: number;
  view: {
    created_at: number;
    replicas: { assigned_at: number; acked_at: number | null; precommitted_at: number | null; committed_at: number | null }[];
  };
  trace: { arrived: number; sign_start: number; sign_end: number; delivered: number };
  /**
   * The Worker's request-log line (middleware/request-log.ts): start + latency_ms is workerd's Date.now() when the
   * route's answer was built. workerd's clock moves only at I/O, so that is when the queue's RPC answer arrived (or
   * a later I/O): the receipt's signing and the JSON after it are not in it.
   */
  served?: number;
}

const STAGES: [string, (s: TaskSample) => number][] = [
  ["client → task written: HTTP in, Worker (auth, zod), RPC, admission", (s) => s.view.created_at - s.sent],
  ["task written → assign: miner pick, replica row", (s) => s.view.replicas[0].assigned_at - s.view.created_at],
  ["assign → miner has it, acks: accept commit (output gate), WebSocket out", (s) => s.trace.arrived - s.view.replicas[0].assigned_at],
  ["miner: zero-cost engine + commitment hash", (s) => s.trace.sign_start - s.trace.arrived],
  ["miner: EIP-712 precommit signature", (s) => s.trace.sign_end - s.trace.sign_start],
  ["miner: precommit + commit written to the socket", (s) => s.trace.delivered - s.trace.sign_end],
  [
    "miner → commit handled: WebSocket in, signature recovery, precommit write",
    (s) => s.view.replicas[0].committed_at! - s.trace.delivered,
  ],
  ["commit → client: checks, close write, RPC back, response", (s) => s.received - s.view.replicas[0].committed_at!],
];

/** The last stage split at the Worker's clock, when every sample has its request-log line. */
const SPLIT: [string, (s: TaskSample) => number][] = [
  ["  of which commit → Worker has the answer: close write, output gate, RPC back", (s) => s.served! - s.view.replicas[0].committed_at!],
  ["  of which → client has read it: receipt, JSON, response out, client wake-up", (s) => s.received - s.served!],
];

/** Mean and p50 per stage (they add up to the mean end-to-end time); printed as a table. */
export function stageTable(samples: TaskSample[]): string[] {
  const split = samples.length > 0 && samples.every((s) => s.served !== undefined) ? SPLIT : [];
  const rows = [...STAGES, ...split].map(([name, f]) => {
    const xs = samples.map(f);
    return `  ${name.padEnd(80)} ${fx(mean(xs)).padStart(7)} ${fx(pct(xs, 50)).padStart(7)}`;
  });
  const e2e = samples.map((s) => s.received - s.sent);
  return [
    `  ${"stage (ms; DO timestamps are whole ms)".padEnd(80)} ${"mean".padStart(7)} ${"p50".padStart(7)}`,
    ...rows,
    `  ${"end to end".padEnd(80)} ${fx(mean(e2e)).padStart(7)} ${fx(pct(e2e, 50)).padStart(7)}`,
  ];
}
