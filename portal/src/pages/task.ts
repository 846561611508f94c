import { isTerminal } from "../../../shared/task-state.ts";
import { get } from "../api.ts";
import { barChart } from "../charts.ts";
import { badge, fill, fmt, h, link, short, table, tiles, time } from "../dom.ts";

// One task: its timeline (created → assigned → acked → precommitted → committed → closed, with block heights where
// the router records them and ms since creation), its replicas with their commitments and signatures, and the
// consensus verdict with each replica's distance when similarity judged it. Re-read every second until it closes.

// biome-ignore lint/suspicious/noExplicitAny: a task view (shared/views.ts TaskView) as JSON.
type Task = any;

function timeline(t: Task): HTMLElement {
  const since = (at: number | null) => (at ? `+${fmt(at - t.created_at)} ms` : "—");
  const steps: [string, number | null, string][] = [["created", t.created_at, `block ${t.created_block}`]];
  for (const r of t.replicas) {
    const who = short(r.miner, 8);
    steps.push([`assigned ${who}`, r.assigned_at, `block ${r.assigned_block}`]);
    steps.push([`acked ${who}`, r.acked_at, ""]);
    steps.push([`precommitted ${who}`, r.precommitted_at, ""]);
    steps.push([`committed ${who}`, r.committed_at, ""]);
  }
  steps.push([
    t.status === "failed" ? "failed" : "validated, closed",
    t.finished_at,
    t.finished_block === null ? "" : `block ${t.finished_block}`,
  ]);
  const done = steps.filter((s) => s[1]).sort((a, b) => a[1]! - b[1]!);
  const pending = steps.filter((s) => !s[1]);
  return h(
    "ol",
    { class: "timeline", id: "timeline", "aria-label": "Task timeline" },
    ...done.map(([what, at, block]) =>
      h("li", { class: "done" }, h("strong", {}, what), ` ${time(at)} (${since(at)}) `, h("span", { class: "muted" }, block)),
    ),
    ...pending.map(([what]) => h("li", { class: "pending" }, h("strong", {}, what), " pending")),
  );
}

function replicas(t: Task): HTMLElement {
  const rows = t.replicas.map((r: Task) => [
    link(`miners/${r.miner}`, short(r.miner), `miner ${r.miner}`),
    badge(r.state),
    r.agreed === null ? "—" : r.agreed ? "agreed" : "outlier",
    h("code", { title: r.hash ?? "" }, short(r.hash, 12)),
    h("code", { title: r.commitment ?? "" }, short(r.commitment, 12)),
    h("code", { title: r.signature ?? "" }, short(r.signature, 12)),
    r.latency_ms === null ? "—" : `${fmt(r.latency_ms)} ms`,
    r.inference_ms === null ? "—" : `${fmt(r.inference_ms)} ms`,
    r.reason ?? "",
  ]);
  const heads = ["Miner", "State", "Verdict", "Result hash", "Commitment", "Signature", "Latency", "Inference", "Reason"];
  return table(`${rows.length} replicas (hashes, commitments and signatures show once the task is finished)`, heads, rows, {
    id: "replicas",
  });
}

function consensus(t: Task): HTMLElement {
  const c = t.consensus;
  if (!c) return h("p", { class: "muted" }, t.status === "failed" ? `Failed: ${t.error?.code} ${t.error?.message}` : "No verdict yet.");
  const parts: (Node | string)[] = [
    tiles([
      ["Method", c.method],
      ["Status", badge(c.status)],
      ["Quorum", c.quorum],
      ["Agreed", c.agreed.length],
      ["Outliers", c.outliers.length],
    ]),
  ];
  const sim = c.similarity ?? c.embedding;
  if (sim) {
    const bars = Object.entries(sim.distances as Record<string, number>).map(([m, d]) => [short(m, 8), d] as [string, number]);
    parts.push(barChart("Cosine distance of each replica to the chosen output", bars, "", sim.threshold ?? sim.tolerance));
  }
  if (c.note) parts.push(h("p", { class: "muted" }, c.note));
  return h("div", { id: "consensus" }, ...parts);
}

export async function taskPage(main: HTMLElement, [sid, tid]: string[], signal: AbortSignal): Promise<void> {
  const path = `/api/v1/tasks/${encodeURIComponent(sid)}/${encodeURIComponent(tid)}`;
  const head = h("div");
  const body = h("div");
  main.append(h("h1", {}, `Task #${tid}`), h("p", {}, "Session ", link(`sessions/${encodeURIComponent(sid)}`, sid)), head, body);
  const render = async () => {
    const t: Task = await get(path);
    if (signal.aborted) return;
    fill(
      head,
      tiles([
        ["Status", badge(t.status), "task-status"],
        ["Model", t.model],
        ["Redundancy", t.redundancy],
        ["Took", t.finished_at ? `${fmt(t.finished_at - t.created_at)} ms` : "running"],
      ]),
    );
    fill(
      body,
      h("h2", {}, "Timeline"),
      timeline(t),
      h("h2", {}, "Replicas"),
      replicas(t),
      h("h2", {}, "Consensus"),
      consensus(t),
      t.result ? h("details", {}, h("summary", {}, "Result text"), h("pre", {}, t.result.text)) : null,
    );
    if (!isTerminal(t.status)) setTimeout(() => render().catch(() => {}), 1000);
  };
  await render();
}
