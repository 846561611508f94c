import { Hono } from "hono";
import { listMiners, minerShard, minerViews, overview } from "../../durable-objects/pool-shards.ts";
import { oracle } from "../../durable-objects/stubs.ts";
import { type AppEnv, VERSION } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { receiptDomain, receiptSigner } from "../lib/receipts.ts";
import { params, query } from "../lib/request-validation.ts";
import { AddressParam, ListQuery, PageQuery } from "../lib/schemas.ts";
import { ledgerSeenBy } from "../lib/tenancy.ts";

// Health and network information. ping and about are public; the rest need an API key (mounted after auth).

export const publicMeta = new Hono<AppEnv>();

publicMeta.get("/ping", (c) => c.json({ status: "ok", time: Date.now() }));

publicMeta.get("/about", (c) =>
  c.json({
    name: c.env.ROUTER_NAME,
    version: VERSION,
    description: "Decentralized inference router: sessions queue tasks for redundant miners that run real models",
    api_versions: ["v1", "v2", "v3"],
    default_model: c.env.DEFAULT_MODEL,
    default_session: c.env.DEFAULT_SESSION_ID ?? null,
    auth: "Authorization: Bearer <api key> on every route but /ping and /about",
    // Who signs the receipts every answer carries, and under which EIP-712 domain (shared/receipt.ts verifyReceipt).
    receipt_signer: receiptSigner(c.env).address,
    receipt_domain: receiptDomain(c.env),
  }),
);

export const meta = new Hono<AppEnv>();

// Counts come from the pool (durable-objects/pool-miners.ts `networkOverview`): no route reads every session or miner.
meta.get("/info", async (c) => {
  const o = await overview(c.env);
  // Benched miners are connected, just given no sessions.
  return c.json({
    active_sessions: o.sessions.active,
    address: c.env.ROUTER_ADDRESS || null,
    name: c.env.ROUTER_NAME,
    node_stats: { dedicated_count: o.dedicated, ephemeral_count: o.connected - o.dedicated, total_count: o.connected },
    receipt_domain: receiptDomain(c.env),
    receipt_signer: receiptSigner(c.env).address,
    total_sessions: o.sessions.total,
    version: VERSION,
  });
});

meta.get("/status", async (c) => {
  const [o, clock] = await Promise.all([overview(c.env), oracle(c.env).snapshot()]);
  return c.json({
    active_sessions: o.sessions.active,
    connected_miners: o.connected,
    // Workers expose no host metrics; these aggregate what connected miners report in their heartbeats.
    cpu_usage: o.cpu_usage,
    memory_usage: o.memory_mb,
    uptime: Math.floor((Date.now() - clock.genesis_at) / 1000),
    block_height: clock.height,
    block_interval_ms: clock.interval_ms,
    block_at: clock.at,
  });
});

/**
 * GET /miners?limit=&before=: newest registration first, `limit` (1–500, default 100) a page, `before` the previous
 * page's `next_before`; each miner's sessions as the caller may see them (its own and the shared ones); `stats`
 * count every registered miner.
 */
meta.get("/miners", query(PageQuery), async (c) => {
  const { limit, before } = c.req.valid("query");
  const { nodes, stats, next_before } = await listMiners(c.env, c.get("owner"), limit, before);
  return c.json({ nodes, stats, next_before });
});

/**
 * A miner's recent ledger entries (rewards, slashes, penalties), newest first; `before` pages by entry id. Session
 * and task ids show on the caller's own tasks only (lib/tenancy.ts).
 */
meta.get("/miners/:address/ledger", params(AddressParam), query(ListQuery), async (c) => {
  const address = c.req.valid("param").address.toLowerCase();
  const { limit, before } = c.req.valid("query");
  const [[miner], entries] = await Promise.all([minerViews(c.env, [address]), minerShard(c.env, address).ledger(address, limit, before)]);
  if (!miner) throw new ApiError("not_found", `no miner ${address} is registered`);
  const lines = ledgerSeenBy(entries, c.get("owner"));
  return c.json({ address, stake: miner.stake, balance: miner.balance, reputation: miner.reputation, count: lines.length, entries: lines });
});
