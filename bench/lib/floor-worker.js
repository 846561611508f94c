// The floor of the router's shape, for `npm run bench:floor`: a Worker that hands each request to one SQLite-backed
// Durable Object over RPC, which sends it to a miner over a hibernatable WebSocket and returns the miner's reply.
// Nothing else: no auth, no validation, no rate limit, no signatures, no receipt, no usage. `?writes=` says how
// many durable writes a task makes, where the router makes them: 1 = the task row before the assign (the output
// gate holds the assign until it is on disk), 2 = that and the result before the answer.
import { DurableObject } from "cloudflare:workers";

export class Floor extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.waiting = new Map();
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS task (id INTEGER PRIMARY KEY, prompt TEXT, result TEXT)");
    // When the runtime restarts the object (an overload resets it), ids go on well past the last written one: a
    // late reply to a task of the old instance never answers a new one.
    this.next = ctx.storage.sql.exec("SELECT COALESCE(MAX(id), 0) AS n FROM task").one().n + 1_000_000;
  }

  fetch() {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async run(prompt, writes) {
    const id = ++this.next;
    const miners = this.ctx.getWebSockets();
    if (miners.length === 0) throw new Error("no miner");
    if (writes >= 1) this.ctx.storage.sql.exec("INSERT INTO task (id, prompt) VALUES (?, ?)", id, prompt);
    const reply = new Promise((resolve) => this.waiting.set(id, resolve));
    miners[id % miners.length].send(JSON.stringify({ id, prompt }));
    const text = await reply;
    if (writes >= 2) this.ctx.storage.sql.exec("UPDATE task SET result = ? WHERE id = ?", text, id);
    return text;
  }

  webSocketMessage(_ws, raw) {
    const { id, text } = JSON.parse(raw);
    const resolve = this.waiting.get(id);
    this.waiting.delete(id);
    resolve?.(text);
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.FLOOR.get(env.FLOOR.idFromName("session"));
    if (url.pathname === "/miner") return stub.fetch(request);
    if (url.pathname === "/ping") return Response.json({ ok: true });
    const body = await request.json();
    const text = await stub.run(body.prompt, Number(url.searchParams.get("writes") ?? 0));
    return Response.json({
      id: "cmpl-floor",
      object: "text_completion",
      choices: [{ index: 0, text, finish_reason: "length" }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    });
  },
};
