import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { clientIp } from "../middleware/rate-limit.ts";
import { admitViewer, networkEvent, releaseViewer } from "./network-feed.ts";

// The portal's one route of its own (its pages are static assets under /portal/, wrangler.toml [assets]; every other
// read they make is an existing REST route with the signed-in key). GET /api/v1/network/events: Server-Sent Events,
// `event: network` every PORTAL_STREAM_INTERVAL_MS with the network as the caller may see it
// (portal/network-feed.ts). A stream ends after PORTAL_STREAM_LIFETIME_S (the page reconnects), so a viewer whose
// going away the runtime does not report (wrangler dev keeps writes to a gone client succeeding) holds its slot no
// longer than that; at most PORTAL_VIEWERS_PER_IP streams per client IP are open at once (429 past it).

export const portalFeed = new Hono<AppEnv>();

const num = (v: string | undefined, fallback: number, min: number, max: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n >= min ? Math.min(n, max) : fallback;
};

const WRITE_TIMEOUT_MS = 10_000;

/** Whether `p` settles (resolved: true) within `ms`; false on a rejection or a timeout. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

portalFeed.get("/events", (c) => {
  const interval = num(c.env.PORTAL_STREAM_INTERVAL_MS, 2000, 250, 60_000);
  const lifetimeMs = num(c.env.PORTAL_STREAM_LIFETIME_S, 600, 5, 3600) * 1000;
  const cap = num(c.env.PORTAL_VIEWERS_PER_IP, 4, 1, 100);
  const ip = clientIp(c);
  if (!admitViewer(ip, cap))
    throw new ApiError("rate_limited", `at most ${cap} network streams per client IP are open at once`, { limit: cap });
  const owner = c.get("owner");
  c.header("Cache-Control", "no-store");
  return streamSSE(
    c,
    async (sse) => {
      const until = Date.now() + lifetimeMs;
      const gone = c.req.raw.signal;
      let id = 0;
      try {
        while (!sse.aborted && !sse.closed && !gone.aborted && Date.now() < until) {
          const event = await networkEvent(c.env, owner, interval);
          const write = sse.writeSSE({ event: "network", id: String(++id), data: JSON.stringify(event), retry: interval });
          // A viewer that stopped reading (a write not taken within WRITE_TIMEOUT_MS) is let go.
          if (!(await settlesWithin(write, WRITE_TIMEOUT_MS))) break;
          await sse.sleep(interval);
        }
      } finally {
        releaseViewer(ip);
      }
    },
    async (err, sse) => {
      console.error(JSON.stringify({ msg: "portal stream failed", error: String(err) }));
      await sse.writeSSE({ event: "error", data: JSON.stringify({ code: "internal_error", message: "the network stream failed" }) });
    },
  );
});
