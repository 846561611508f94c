import { get } from "../api.ts";
import { badge, fill, fmt, h, link, short, table, tiles, time } from "../dom.ts";

// Sessions the key may see (its own and the shared ones), and one session's tasks with their stage, refreshed while
// the page is open and visible (one list read every two seconds).

export async function sessionsPage(main: HTMLElement): Promise<void> {
  main.append(h("h1", {}, "Sessions"));
  const list = await get("/api/v1/sessions?limit=100");
  if (!list.sessions.length) return void main.append(h("p", { class: "muted" }, "No session yet: run a prompt in the playground."));
  const rows = list.sessions.map((s: Record<string, unknown>) => [
    link(`sessions/${encodeURIComponent(String(s.id))}`, String(s.id)),
    String(s.owner),
    String(s.model ?? "—"),
    fmt(s.miners_count as number),
    s.active ? "yes" : "no",
    time(s.created_at as number),
  ]);
  main.append(
    table(`${list.count} sessions`, ["Session", "Owner", "Model", "Miners", "Active", "Created"], rows, { id: "sessions-table" }),
  );
}

// biome-ignore lint/suspicious/noExplicitAny: a task view (shared/views.ts TaskView) as JSON.
const taskRow = (sid: string, t: any) => [
  link(`tasks/${encodeURIComponent(sid)}/${t.task_id}`, `#${t.task_id}`, `task ${t.task_id}`),
  badge(t.status),
  t.model,
  t.redundancy,
  t.replicas.map((r: { state: string }) => r.state).join(", ") || "—",
  t.consensus ? `${t.consensus.method} ${t.consensus.status}` : "—",
  time(t.created_at),
  t.finished_at ? `${fmt(t.finished_at - t.created_at)} ms` : "—",
];

export async function sessionPage(main: HTMLElement, [sid]: string[], signal: AbortSignal): Promise<void> {
  const s = await get(`/api/v1/sessions/${encodeURIComponent(sid)}`);
  const c = s.config;
  main.append(
    h("h1", {}, `Session ${sid}`),
    tiles([
      ["Model", c.model],
      ["Redundancy", c.redundancy],
      ["Consensus", c.consensus],
      ["Deposit used", `${fmt(s.usage.used)} / ${fmt(s.usage.deposit)}`],
      ["Tasks", `${fmt(s.usage.tasks_total)} (${fmt(s.usage.tasks_open)} open)`],
      ["Miners", s.usage.connected_miners.map((m: string) => short(m)).join(", ") || "—"],
    ]),
  );
  const box = h("div", { id: "tasks", "aria-live": "polite" });
  main.append(h("h2", {}, "Tasks"), box);
  const refresh = async () => {
    if (signal.aborted) return;
    if (document.visibilityState === "visible") {
      const list = await get(`/api/v1/tasks/${encodeURIComponent(sid)}?limit=50`).catch(() => null);
      if (list && !signal.aborted) {
        const heads = ["Task", "Status", "Model", "Redundancy", "Replicas", "Consensus", "Created", "Took"];
        fill(
          box,
          list.count
            ? table(
                `${list.count} newest tasks`,
                heads,
                list.tasks.map((t: unknown) => taskRow(sid, t)),
              )
            : "No task yet.",
        );
      }
    }
    setTimeout(refresh, 2000);
  };
  await refresh();
}
