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

  fetch(request) {
    // A streamed task asked through fetch (`?via=fetch`): the object answers the SSE response itself.
    if (request.headers.get("upgrade") !== "websocket") return request.json().then(async (body) => sse(await this.stream(body.prompt)));
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  /** As run, but answers at once with a stream the miner's text is written to when it arrives (1 write). */
  async stream(prompt) {
    const pipe = new TransformStream();
    const writer = pipe.writable.getWriter();
    this.run(prompt, 1).then(
      (text) => writer.write(new TextEncoder().encode(`${JSON.stringify({ text })}\n`)).then(() => writer.close()),
      (err) => writer.abort(err),
    );
    return pipe.readable;
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
    if (body.stream && url.searchParams.get("via") === "fetch") {
      return stub.fetch("https://floor/stream", { method: "POST", body: JSON.stringify(body) });
    }
    if (body.stream) return sse(await stub.stream(body.prompt));
    const text = await stub.run(body.prompt, Number(url.searchParams.get("writes") ?? 0));
    return Response.json({
      id: "cmpl-floor",
      object: "text_completion",
      choices: [{ index: 0, text, finish_reason: "length" }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    });
  },
};

/** The object's NDJSON stream as OpenAI-style SSE: a chunk per line, then [DONE] (as the router relays tokens). */
function sse(events) {
  const encoder = new TextEncoder();
  let buffered = "";
  const out = events.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream({
      transform(piece, controller) {
        buffered += piece;
        for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
          const { text } = JSON.parse(buffered.slice(0, nl));
          buffered = buffered.slice(nl + 1);
          const chunk = { id: "cmpl-floor", object: "text_completion", choices: [{ index: 0, text, finish_reason: null }] };
          controller.enqueue(encoder.encode(`data: ${JSON.stringify(chunk)}\n\n`));
        }
      },
      flush(controller) {
        controller.enqueue(encoder.encode("data: [DONE]\n\n"));
      },
    }),
  );
  return new Response(out, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
}
