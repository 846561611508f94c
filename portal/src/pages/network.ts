import { badge, fill, fmt, h, link, short, table, tiles } from "../dom.ts";
import { type Miner, type NetworkEvent, watchNetwork } from "../network-stream.ts";

// Network: the miners, the block height (ticking between events from the oracle's interval), results per second and
// latency percentiles, all from the router's live stream. No prompt or output appears here.

const minerRow = (m: Miner) => [
  link(`miners/${m.address}`, short(m.address), `miner ${m.address}`),
  m.name ?? "—",
  m.models.join(", "),
  m.device,
  m.capacity,
  `${m.inflight} / ${m.capacity}`,
  fmt(m.reputation.score, 3),
  fmt(m.stake),
  fmt(m.balance),
  badge(m.status),
];

export function networkPage(main: HTMLElement, _params: string[], signal: AbortSignal): void {
  const state = h("p", { class: "muted", id: "stream-state", role: "status" }, "connecting…");
  const figures = h("div", { id: "figures" });
  const miners = h("div", { id: "miners" });
  main.append(h("h1", {}, "Network"), state, figures, h("h2", {}, "Miners"), miners);
  let last: NetworkEvent | null = null;
  const history: [number, number][] = [];
  const tick = setInterval(() => {
    if (!last) return;
    const b = last.block;
    const height = b.height + Math.max(0, Math.floor((Date.now() - b.at) / b.interval_ms));
    const el = document.getElementById("block-height");
    if (el) el.textContent = fmt(height);
  }, 250);
  signal.addEventListener("abort", () => clearInterval(tick));
  watchNetwork(
    signal,
    (e) => {
      last = e;
      history.push([e.at, e.results_total]);
      while (history.length > 6) history.shift();
      const [t0, n0] = history[0];
      const rate = history.length > 1 ? (e.results_total - n0) / ((e.at - t0) / 1000) : null;
      fill(
        figures,
        tiles([
          ["Block height", fmt(e.block.height), "block-height"],
          ["Miners connected", fmt(e.connected), "miners-connected"],
          ["Active sessions", fmt(e.active_sessions)],
          ["Results / s", fmt(rate, 2), "results-rate"],
          ["Latency p50", `${fmt(e.latency_ms.p50)} ms`],
          ["p90 / p99", `${fmt(e.latency_ms.p90)} / ${fmt(e.latency_ms.p99)} ms`],
        ]),
      );
      const heads = ["Miner", "Name", "Models", "Device", "Capacity", "Load", "Reputation", "Stake", "Balance", "Status"];
      fill(
        miners,
        e.miners.length
          ? table(`${e.miners.length} miners, newest registration first`, heads, e.miners.map(minerRow), { id: "miners-table" })
          : h("p", { class: "muted" }, "No miner has registered yet."),
      );
    },
    (s) => (state.textContent = `Stream: ${s}`),
  );
}
