import { createServer, type IncomingMessage, type ServerResponse } from "node:http";

// An instant OpenAI-compatible server (`node bench/lib/mock-openai.ts --port=N`): every completion answers one
// fixed token at once, streamed or not. The peer the Portkey gateway and the direct baseline are measured against.

const TEXT = " ok";

function answer(req: IncomingMessage, res: ServerResponse, raw: string): void {
  let body: { stream?: boolean; model?: string } = {};
  try {
    body = JSON.parse(raw);
  } catch {}
  const chat = req.url?.includes("/chat/") ?? false;
  const base = { id: "cmpl-mock", created: 0, model: body.model ?? "mock" };
  const choice = chat
    ? { index: 0, message: { role: "assistant", content: TEXT }, finish_reason: "length" }
    : { index: 0, text: TEXT, finish_reason: "length" };
  const usage = { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 };
  if (!body.stream) {
    const json = JSON.stringify({ ...base, object: chat ? "chat.completion" : "text_completion", choices: [choice], usage });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
    res.end(json);
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const delta = chat ? { index: 0, delta: { content: TEXT }, finish_reason: null } : { index: 0, text: TEXT, finish_reason: null };
  res.write(`data: ${JSON.stringify({ ...base, object: chat ? "chat.completion.chunk" : "text_completion", choices: [delta] })}\n\n`);
  res.write(`data: ${JSON.stringify({ ...base, object: chat ? "chat.completion.chunk" : "text_completion", choices: [], usage })}\n\n`);
  res.end("data: [DONE]\n\n");
}

export function startMockServer(port: number): Promise<void> {
  const server = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => answer(req, res, raw));
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((r) => server.listen(port, "127.0.0.1", () => r()));
}

if (import.meta.main) {
  const port = Number(process.argv.find((a) => a.startsWith("--port="))?.slice(7));
  await startMockServer(port);
  console.log(`listening ${port}`);
}
