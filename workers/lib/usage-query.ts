import { usageMeter } from "../../durable-objects/stubs.ts";
import type { UsageRow } from "../../durable-objects/usage-meter.ts";

// Usage reports (routes/usage.ts for an owner's own keys, routes/admin.ts for everyone's), from the owners'
// UsageMeter objects (durable-objects/usage-meter.ts).

export interface UsageFilter {
  bucket: "minute" | "day";
  from?: number;
  to?: number;
  key_id?: string;
  model?: string;
}

/** Owners one admin report reads at most (each is one Durable Object call). */
export const REPORT_OWNERS_MAX = 200;

const DEFAULT_SPAN = { minute: 86_400_000, day: 30 * 86_400_000 };

function view(owner: string, r: UsageRow) {
  return {
    owner,
    key_id: r.key_id,
    model: r.model,
    start: Math.floor(r.start / 1000),
    requests: r.requests,
    prompt_tokens: r.prompt_tokens,
    completion_tokens: r.completion_tokens,
    total_tokens: r.prompt_tokens + r.completion_tokens,
    cost: r.cost,
    latency_ms_sum: r.latency_ms_sum,
    latency_ms_max: r.latency_ms_max,
    latency_ms_avg: r.requests > 0 ? Math.round(r.latency_ms_sum / r.requests) : 0,
    failures: r.failures,
  };
}

/** The usage rows of `owners` in the filter's window, with totals; cost in µUSD. */
export async function usageReport(env: Env, owners: string[], f: UsageFilter) {
  const to = f.to ?? Date.now();
  const from = f.from ?? to - DEFAULT_SPAN[f.bucket];
  const q = { bucket: f.bucket, from, to, key_id: f.key_id, model: f.model };
  const per = await Promise.all(owners.map(async (o) => (await usageMeter(env, o).query(q)).map((r) => view(o, r))));
  const data = per.flat();
  const sum = (k: "requests" | "prompt_tokens" | "completion_tokens" | "cost" | "failures") => data.reduce((n, r) => n + r[k], 0);
  const totals = {
    requests: sum("requests"),
    prompt_tokens: sum("prompt_tokens"),
    completion_tokens: sum("completion_tokens"),
    total_tokens: sum("prompt_tokens") + sum("completion_tokens"),
    cost: sum("cost"),
    failures: sum("failures"),
  };
  return {
    object: "usage" as const,
    bucket: f.bucket,
    from: Math.floor(from / 1000),
    to: Math.floor(to / 1000),
    cost_unit: "micro_usd" as const,
    data,
    totals,
  };
}
