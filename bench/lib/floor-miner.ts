// The floor's miner (`node bench/lib/floor-miner.ts --url=ws://…/miner`): one WebSocket to the floor's Durable
// Object, answering every task at once with one fixed token. It signs nothing and computes nothing.

const url = process.argv.find((a) => a.startsWith("--url="))?.slice(6);
if (!url) throw new Error("--url=ws://host:port/miner");
const ws = new WebSocket(url);
ws.addEventListener("open", () => console.log("ready"));
ws.addEventListener("message", (e) => {
  const { id } = JSON.parse(String(e.data)) as { id: number };
  ws.send(JSON.stringify({ id, text: " ok" }));
});
ws.addEventListener("close", () => process.exit(0));
ws.addEventListener("error", (e) => {
  console.error(String((e as ErrorEvent).message ?? e));
  process.exit(1);
});
