import { describe, expect, it } from "vitest";
import { admitViewer, percentile, releaseViewer } from "../../workers/portal/network-feed.ts";
import { api, errorOf } from "./helpers.ts";

// The portal's live network stream (workers/portal/): its figures, its per-IP viewer cap, and the route itself in
// the Workers runtime — an authenticated SSE stream whose events carry the network and no one's prompts.

describe("network feed figures", () => {
  it("takes nearest-rank percentiles, null when there is nothing to rank", () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([30], 99)).toBe(30);
    const xs = [50, 10, 40, 20, 30, 60, 70, 80, 90, 100];
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 90)).toBe(90);
    expect(percentile(xs, 99)).toBe(100);
  });

  it("admits at most `cap` viewers per IP, and again once one leaves", () => {
    const ip = `198.51.100.${Math.floor(Math.random() * 250)}`;
    expect([1, 2, 3].map(() => admitViewer(ip, 2))).toEqual([true, true, false]);
    expect(admitViewer("203.0.113.9", 2)).toBe(true);
    releaseViewer(ip);
    expect(admitViewer(ip, 2)).toBe(true);
    releaseViewer(ip);
    releaseViewer(ip);
    releaseViewer("203.0.113.9");
  });
});

describe("GET /api/v1/network/events", () => {
  it("needs an API key", async () => {
    const res = await api("GET", "/network/events", undefined, { key: "not-a-key" });
    expect(res.status).toBe(401);
    expect((await errorOf(res)).error.code).toBe("unauthorized");
  });

  it("streams `network` events with the block, the miners and the figures", async () => {
    const abort = new AbortController();
    const res = await api("GET", "/network/events", undefined, { signal: abort.signal, headers: { "CF-Connecting-IP": "192.0.2.77" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n\n")) text += (await reader.read()).value ?? "";
    abort.abort();
    await reader.cancel().catch(() => {});
    expect(text).toMatch(/^event: network\n/);
    const event = JSON.parse(/^data: (.*)$/m.exec(text)![1]);
    expect(event).toMatchObject({
      block: { height: expect.any(Number) },
      connected: expect.any(Number),
      results_total: expect.any(Number),
    });
    expect(Array.isArray(event.miners)).toBe(true);
    expect(Object.keys(event.latency_ms)).toEqual(["p50", "p90", "p99"]);
  });
});
