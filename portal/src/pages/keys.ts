import { get } from "../api.ts";
import { lineChart } from "../charts.ts";
import { fmt, h, table, tiles, time } from "../dom.ts";

// Keys and usage: the signed-in owner's managed keys (GET /api/v1/keys) and its usage per key × model
// (GET /api/v1/usage: the last hour by minute, charted; the last 30 days by day), with the cost in µUSD.

interface Row {
  key_id: string;
  model: string;
  start: number;
  requests: number;
  total_tokens: number;
  cost: number;
  latency_ms_avg: number | null;
  failures: number;
}

/** Minute buckets of the last hour summed over keys and models, empty minutes as 0: [start ms, value]. */
function series(rows: Row[], pick: (r: Row) => number): [number, number][] {
  const now = Math.floor(Date.now() / 60_000) * 60_000;
  const by = new Map<number, number>();
  for (let t = now - 59 * 60_000; t <= now; t += 60_000) by.set(t, 0);
  for (const r of rows) if (by.has(r.start * 1000)) by.set(r.start * 1000, by.get(r.start * 1000)! + pick(r));
  return [...by.entries()];
}

export async function keysPage(main: HTMLElement): Promise<void> {
  const [keys, minutes, days] = await Promise.all([
    get("/api/v1/keys"),
    get("/api/v1/usage?bucket=minute"),
    get("/api/v1/usage?bucket=day"),
  ]);
  const t = days.totals ?? {};
  main.append(
    h("h1", {}, "Keys and usage"),
    h("p", {}, `Owner ${days.owner}. Costs are in µUSD (millionths of a dollar).`),
    tiles([
      ["Requests (30 days)", fmt(t.requests)],
      ["Tokens", fmt(t.total_tokens)],
      ["Cost", `${fmt(t.cost)} µUSD`],
      ["Failures", fmt(t.failures)],
    ]),
    h("h2", {}, "Requests per minute (last hour)"),
    lineChart(
      "Requests per minute",
      series(minutes.data, (r) => r.requests),
      "requests",
    ),
    h("h2", {}, "Tokens per minute (last hour)"),
    lineChart(
      "Tokens per minute",
      series(minutes.data, (r) => r.total_tokens),
      "tokens",
    ),
    h("h2", {}, "Managed keys"),
  );
  // biome-ignore lint/suspicious/noExplicitAny: key views (durable-objects/key-registry.ts) as JSON.
  const rows = keys.data.map((k: any) => [
    h("code", {}, k.prefix),
    k.name || "—",
    k.allowed_models?.join(", ") ?? "all",
    k.rate_limit ?? "—",
    k.token_budget === null ? "—" : `${fmt(k.tokens_used)} / ${fmt(k.token_budget)}`,
    time(k.created_at),
    k.revoked_at ? `revoked ${time(k.revoked_at)}` : "active",
  ]);
  main.append(
    rows.length
      ? table(`${rows.length} keys`, ["Prefix", "Name", "Models", "Req/min", "Budget used", "Created", "State"], rows, { id: "keys-table" })
      : h("p", { class: "muted" }, "No managed key yet (POST /api/v1/keys creates one)."),
    h("h2", {}, "Usage by key and model (30 days)"),
    table(
      `${days.data.length} rows`,
      ["Key", "Model", "Day", "Requests", "Tokens", "Cost (µUSD)", "Avg latency", "Failures"],
      days.data.map((r: Row) => [
        r.key_id,
        r.model,
        new Date(r.start * 1000).toISOString().slice(0, 10),
        fmt(r.requests),
        fmt(r.total_tokens),
        fmt(r.cost),
        `${fmt(r.latency_ms_avg)} ms`,
        fmt(r.failures),
      ]),
      { id: "usage-table" },
    ),
  );
}
