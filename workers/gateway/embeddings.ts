import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { EmbeddingBody } from "../lib/embedding-schemas.ts";
import { embedOnNetwork } from "../lib/embeddings.ts";
import { taskFacts, withReceipt } from "../lib/receipts.ts";
import { parseBody } from "../lib/request-validation.ts";
import { sessionFor } from "./model-map.ts";
import { modelFor } from "./run.ts";
import type { EmbeddingsBody } from "./schemas.ts";

// POST /openai/v1/embeddings runs the network's embedding job (lib/embeddings.ts, what POST /api/v1/embeddings
// runs: k miners embed, their vectors are compared by cosine distance, the agreed ones answer) for the model
// map's entry, and answers in OpenAI's `list` of `embedding` objects: floats, or base64 of little-endian
// float32s (what the `openai` client asks for unless told otherwise), with the cost and a signed receipt.

/** A float vector as OpenAI's base64 encoding: the bytes of little-endian float32s. */
export function base64Floats(v: readonly number[]): string {
  const bytes = new Uint8Array(v.length * 4);
  const view = new DataView(bytes.buffer);
  for (const [i, x] of v.entries()) view.setFloat32(i * 4, x, true);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export async function runEmbeddings(c: Context<AppEnv>, b: EmbeddingsBody) {
  const entry = modelFor(c, b.model, "embedding");
  // A pool session must exist already (embedding jobs create only the default session on first use).
  const session_id = sessionFor(c.env, entry);
  // The network route's own bounds (texts, bytes) apply, named as the OpenAI field (`input`).
  const body = parseBody(EmbeddingBody, { input: b.input, model: entry.network_model, session_id, max_miners: entry.redundancy });
  const answer = await embedOnNetwork(c.env, c.get("owner"), body);
  const { cost, receipt } = await withReceipt(c, { ...taskFacts("embedding", answer.task, entry.id), price: entry.price });
  const encode = b.encoding_format === "base64" ? base64Floats : (v: number[]) => v;
  return c.json({
    object: "list",
    data: answer.data.map((d) => ({ object: "embedding", index: d.index, embedding: encode(d.embedding) })),
    model: entry.id,
    usage: answer.usage,
    session_id: answer.session_id,
    task_id: answer.task_id,
    cost,
    receipt,
  });
}
