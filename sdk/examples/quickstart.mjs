// A verified completion, whole and streamed, with edge-inference-sdk (Node 20 or later):
//   npm install ./edge-inference-sdk-0.1.0.tgz
//   ROUTER_URL=http://127.0.0.1:8787 API_KEY=dev-key node quickstart.mjs
import { EdgeApiError, EdgeClient, VerificationError } from "edge-inference-sdk";

const client = new EdgeClient({
  baseUrl: process.env.ROUTER_URL ?? "http://127.0.0.1:8787",
  apiKey: process.env.API_KEY ?? "dev-key",
  verify: true, // every answer's miner signatures, verdict and receipt are checked, or the call throws
});

try {
  const session = await client.sessions.create({ redundancy: 2, deposit: 100_000 });
  const answer = await client.completions.create({ session_id: session.id, prompt: "The edge network", max_tokens: 12 });
  console.log(`whole:    ${JSON.stringify(answer.text)} from ${answer.miners.map((m) => m.address).join(", ")}`);

  process.stdout.write("streamed: ");
  for await (const token of client.completions.stream({ session_id: session.id, prompt: "The edge network", max_tokens: 12 }).tokens()) {
    process.stdout.write(token);
  }
  process.stdout.write("\n");

  const report = await client.verify(answer);
  console.log(`verified: ${report.minersChecked} miner signatures, receipt signed: ${report.receiptSigned}`);
} catch (err) {
  if (err instanceof VerificationError) console.error(`do not trust this answer: ${err.problems.join("; ")}`);
  else if (err instanceof EdgeApiError) console.error(`router said ${err.code} (request ${err.requestId}): ${err.message}`);
  else throw err;
  process.exitCode = 1;
}
