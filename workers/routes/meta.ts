import { Hono } from "hono";
import { nodePool, oracle } from "../../durable-objects/stubs.ts";
import { type AppEnv, VERSION } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { params, query } from "../lib/request-validation.ts";
import { AddressParam, ListQuery } from "../lib/schemas.ts";
import { ledgerSeenBy, minersSeenBy } from "../lib/tenancy.ts";

// Health and network information. ping and about are public; the rest need an API key (mounted after auth).

export const publicMeta = new Hono<AppEnv>();

publicMeta.get("/ping", (c) => c.json({ status: "ok", time: Date.now() }));

publicMeta.get("/about", (c) =>
  c.json({
    name: c.env.ROUTER_NAME,
    version: VERSION,
    description: "Decentralized inference router: sessions queue tasks for redundant miners that run real models",
    api_versions: ["v1"],
    default_model: c.env.DEFAULT_MODEL,
    default_session: c.env.DEFAULT_SESSION_ID ?? null,
    auth: "Authorization: Bearer <api key> on every route but /ping and /about",
  }),
);

export const meta = new Hono<AppEnv>();

meta.get("/info", async (c) => {
  const pool = nodePool(c.env);
  const [sessions, miners] = await Promise.all([pool.listSessions(), pool.listMiners()]);
  // Benched miners are connected, just given no sessions.
  const online = miners.filter((m) => m.status !== "offline");
  const dedicated = new Set(sessions.filter((s) => s.mode === "dedicated").map((s) => s.id));
  const dedicatedCount = online.filter((m) => m.sessions.some((id) => dedicated.has(id))).length;
  return c.json({
    active_sessions: sessions.filter((s) => s.active).length,
    address: c.env.ROUTER_ADDRESS || null,
    name: c.env.ROUTER_NAME,
    node_stats: { dedicated_count: dedicatedCount, ephemeral_count: online.length - dedicatedCount, total_count: online.length },
    total_sessions: sessions.length,
    version: VERSION,
  });
});

meta.get("/status", async (c) => {
  const pool = nodePool(c.env);
  const [sessions, miners, clock] = await Promise.all([pool.listSessions(), pool.listMiners(), oracle(c.env).snapshot()]);
  const online = miners.filter((m) => m.status !== "offline");
  const cpu = online.map((m) => m.cpu_usage).filter((v): v is number => v !== null);
  const mem = online.map((m) => m.memory_mb).filter((v): v is number => v !== null);
  return c.json({
    active_sessions: sessions.filter((s) => s.active).length,
    connected_miners: online.length,
    // Workers expose no host metrics; these aggregate what connected miners report in their heartbeats.
    cpu_usage: cpu.length ? cpu.reduce((a, b) => a + b, 0) / cpu.length : 0,
    memory_usage: mem.reduce((a, b) => a + b, 0),
    uptime: Math.floor((Date.now() - clock.genesis_at) / 1000),
    block_height: clock.height,
    block_interval_ms: clock.interval_ms,
    block_at: clock.at,
  });
});

meta.get("/miners", async (c) => {
  const pool = nodePool(c.env);
  const [all, sessions] = await Promise.all([pool.listMiners(), pool.listSessions()]);
  // Each miner's sessions as the caller may see them: its own and the shared ones (lib/tenancy.ts).
  const nodes = minersSeenBy(all, sessions, c.get("owner"));
  const online = nodes.filter((n) => n.status === "online");
  const benched = nodes.filter((n) => n.status === "benched").length;
  return c.json({
    nodes,
    stats: {
      total: nodes.length,
      online: online.length,
      benched,
      offline: nodes.length - online.length - benched,
      capacity: online.reduce((a, n) => a + n.capacity, 0),
      inflight: online.reduce((a, n) => a + n.inflight, 0),
      by_device: Object.fromEntries(["cpu", "webgpu"].map((d) => [d, online.filter((n) => n.device === d).length])),
    },
  });
});

/**
 * A miner's recent ledger entries (rewards, slashes, penalties), newest first; `before` pages by entry id. Session
 * and task ids show on the caller's own tasks only (lib/tenancy.ts).
 */
meta.get("/miners/:address/ledger", params(AddressParam), query(ListQuery), async (c) => {
  const address = c.req.valid("param").address.toLowerCase();
  const { limit, before } = c.req.valid("query");
  const pool = nodePool(c.env);
  const [miners, entries] = await Promise.all([pool.listMiners(), pool.ledger(address, limit, before)]);
  const miner = miners.find((m) => m.address === address);
  if (!miner) throw new ApiError("not_found", `no miner ${address} is registered`);
  const lines = ledgerSeenBy(entries, c.get("owner"));
  return c.json({ address, stake: miner.stake, balance: miner.balance, reputation: miner.reputation, count: lines.length, entries: lines });
});
