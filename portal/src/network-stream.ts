import type { NetworkEvent as SharedNetworkEvent } from "../../shared/views.ts";
import { ApiFailure, sse } from "./api.ts";

// The router's live network stream (GET /api/v1/network/events), reopened when it ends (each stream has a lifetime)
// or drops, with a growing pause; stopped when the page's signal aborts.

export interface Miner {
  address: string;
  name: string | null;
  models: string[];
  device: string;
  capacity: number;
  inflight: number;
  status: "online" | "offline" | "benched";
  sessions: string[];
  stake: number;
  balance: number;
  tokens_per_s: number | null;
  last_seen: number | null;
  reputation: {
    score: number;
    tasks: number;
    agreement_rate: number | null;
    latency_ms: number | null;
    slashes: number;
    outliers: number;
    timeouts: number;
  };
}

export type NetworkEvent = SharedNetworkEvent<Miner>;

interface Subscriber {
  onEvent: (e: NetworkEvent) => void;
  onState: (s: string) => void;
}

// One stream per tab, shared by the pages that show it and kept a few seconds after the last one leaves, so moving
// between the network and a miner's page opens no new stream.
const subscribers = new Set<Subscriber>();
let open: AbortController | null = null;
let closing: ReturnType<typeof setTimeout> | undefined;
let last: NetworkEvent | null = null;
let state = "connecting…";

function broadcastState(s: string): void {
  state = s;
  for (const sub of subscribers) sub.onState(s);
}

async function run(signal: AbortSignal): Promise<void> {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      broadcastState("live");
      for await (const ev of sse("/api/v1/network/events", undefined, signal)) {
        if (ev.event !== "network") continue;
        last = JSON.parse(ev.data) as NetworkEvent;
        for (const sub of subscribers) sub.onEvent(last);
        pause = 1000;
      }
    } catch (err) {
      if (signal.aborted) return;
      broadcastState(err instanceof ApiFailure ? `disconnected: ${err.message}` : "reconnecting…");
      if (err instanceof ApiFailure && err.status === 401) return;
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 15_000);
  }
}

/** Closes the tab's stream now (sign-out). */
export function stopNetwork(): void {
  clearTimeout(closing);
  open?.abort();
  open = null;
  last = null;
}

/** Calls `onEvent` with every network event until `signal` aborts (the page left). */
export function watchNetwork(signal: AbortSignal, onEvent: (e: NetworkEvent) => void, onState: (s: string) => void): void {
  const sub = { onEvent, onState };
  subscribers.add(sub);
  clearTimeout(closing);
  if (!open) {
    open = new AbortController();
    void run(open.signal);
  } else {
    onState(state);
    if (last) onEvent(last);
  }
  signal.addEventListener("abort", () => {
    subscribers.delete(sub);
    if (!subscribers.size) closing = setTimeout(stopNetwork, 5000);
  });
}
