import { get } from "../api.ts";
import { lineChart } from "../charts.ts";
import { fill, fmt, h, link, table, tiles, time } from "../dom.ts";
import { watchNetwork } from "../network-stream.ts";

// A miner: its ledger (rewards, slashes, penalties; session and task ids only on the caller's own tasks), its balance
// over time from the ledger, its reputation score over time as the live stream reports it, and its sessions as the
// caller may see them.

interface Entry {
  id: number;
  session_id: string | null;
  task_id: string | null;
  kind: string;
  amount: number;
  reason: string;
  at: number;
  block: number;
}

/** The balance after each entry of the page, from 0 before the oldest, carried on to now. */
function balanceSeries(entries: Entry[]): [number, number][] {
  if (!entries.length) return [];
  const sorted = [...entries].sort((a, b) => a.id - b.id);
  let total = 0;
  const points: [number, number][] = [[sorted[0].at - 1, 0]];
  for (const e of sorted) points.push([e.at, (total += e.kind === "reward" ? e.amount : -Math.abs(e.amount))]);
  points.push([Date.now(), total]);
  return points;
}

export async function minerPage(main: HTMLElement, [address]: string[], signal: AbortSignal): Promise<void> {
  const ledger = await get(`/api/v1/miners/${encodeURIComponent(address)}/ledger?limit=200`);
  const entries = ledger.entries as Entry[];
  const rep = ledger.reputation;
  const live = h("div", { id: "miner-live" });
  const scoreChart = h("div");
  main.append(
    h("h1", {}, "Miner ", h("code", {}, address)),
    tiles([
      ["Reputation", fmt(rep.score, 3)],
      ["Tasks", fmt(rep.tasks)],
      ["Agreement", rep.agreement_rate === null ? "—" : `${fmt(rep.agreement_rate * 100, 1)} %`],
      ["Stake", fmt(ledger.stake)],
      ["Balance", fmt(ledger.balance)],
      ["Slashes", fmt(rep.slashes)],
    ]),
    live,
    h("h2", {}, "Balance over time (ledger)"),
    lineChart("Balance over time", balanceSeries(entries), "tokens"),
    h("h2", {}, "Reputation over time (live)"),
    scoreChart,
    h("h2", {}, "Ledger"),
  );
  const rows = entries.map((e) => [
    `#${e.id}`,
    e.kind,
    fmt(e.amount),
    e.reason,
    e.session_id && e.task_id ? link(`tasks/${encodeURIComponent(e.session_id)}/${e.task_id}`, `${e.session_id} #${e.task_id}`) : "—",
    time(e.at),
    e.block,
  ]);
  main.append(table(`${entries.length} newest entries`, ["Entry", "Kind", "Amount", "Reason", "Task", "At", "Block"], rows));
  const scores: [number, number][] = [];
  watchNetwork(
    signal,
    (ev) => {
      const m = ev.miners.find((x) => x.address.toLowerCase() === address.toLowerCase());
      if (!m) return;
      scores.push([ev.at, m.reputation.score]);
      if (scores.length > 300) scores.shift();
      fill(scoreChart, lineChart("Reputation score over time", scores, "score"));
      fill(
        live,
        tiles([
          ["Status", m.status],
          ["Device", m.device],
          ["Models", m.models.join(", ")],
          ["Load", `${m.inflight} / ${m.capacity}`],
        ]),
        h("h2", {}, "Sessions"),
        m.sessions.length
          ? h("ul", {}, ...m.sessions.map((s) => h("li", {}, link(`sessions/${encodeURIComponent(s)}`, s))))
          : h("p", { class: "muted" }, "None that this key may see."),
      );
    },
    () => {},
  );
}
