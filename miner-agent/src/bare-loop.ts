// Minimal greedy decode loop straight on onnxruntime-node with KV cache: the baseline the benchmark
// compares the engine's tokens/s against, and a reference for the engine's greedy output.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

interface Loaded {
  session: ort.InferenceSession;
  nLayer: number;
  nHead: number;
  headDim: number;
  eos: number | null;
}

const sessions = new Map<string, Promise<Loaded>>();

/** Same execution provider (and otherwise default options) as transformers.js uses on CPU. */
function load(modelDir: string): Promise<Loaded> {
  let p = sessions.get(modelDir);
  if (!p) {
    p = (async () => {
      const cfg = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8"));
      const session = await ort.InferenceSession.create(join(modelDir, "onnx/model.onnx"), { executionProviders: ["cpu"] });
      const eos = Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id[0] : cfg.eos_token_id;
      return { session, nLayer: cfg.n_layer, nHead: cfg.n_head, headDim: cfg.n_embd / cfg.n_head, eos: eos ?? null };
    })();
    sessions.set(modelDir, p);
  }
  return p;
}

/**
 * Greedy-decodes up to `maxNewTokens` tokens after `promptIds` (stopping after EOS, which is
 * included). `ms` covers prefill and decode, not session creation (sessions are cached per folder).
 */
export async function bareDecode(modelDir: string, promptIds: number[], maxNewTokens: number): Promise<{ ids: number[]; ms: number }> {
  const { session, nLayer, nHead, headDim, eos } = await load(modelDir);
  const t0 = performance.now();
  const feeds: Record<string, ort.Tensor> = {};
  for (let l = 0; l < nLayer; l++) {
    for (const kind of ["key", "value"]) {
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [1, nHead, 0, headDim]);
    }
  }
  let input = promptIds;
  let past = 0;
  const ids: number[] = [];
  while (ids.length < maxNewTokens) {
    const s = input.length;
    feeds.input_ids = new ort.Tensor("int64", BigInt64Array.from(input, BigInt), [1, s]);
    feeds.attention_mask = new ort.Tensor("int64", new BigInt64Array(past + s).fill(1n), [1, past + s]);
    feeds.position_ids = new ort.Tensor(
      "int64",
      BigInt64Array.from({ length: s }, (_, i) => BigInt(past + i)),
      [1, s],
    );
    const out = await session.run(feeds);
    const logits = out.logits.data as Float32Array;
    const vocab = out.logits.dims[2];
    let best = 0;
    for (let v = 1, base = (s - 1) * vocab; v < vocab; v++) if (logits[base + v] > logits[base + best]) best = v;
    ids.push(best);
    if (best === eos) break;
    for (let l = 0; l < nLayer; l++) {
      feeds[`past_key_values.${l}.key`] = out[`present.${l}.key`];
      feeds[`past_key_values.${l}.value`] = out[`present.${l}.value`];
    }
    past += s;
    input = [best];
  }
  return { ids, ms: performance.now() - t0 };
}
