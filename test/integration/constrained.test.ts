import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AutoTokenizer, type PreTrainedTokenizer } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTransformersEngine, type TransformersEngine } from "../../miner-agent/src/engine.ts";
import { BUILTIN_MODEL_ID, ensureBuiltinModel } from "../../miner-agent/src/model/build.ts";
import { CompiledConstraint } from "../../miner-agent/src/model/constrained.ts";
import type { GenerationConstraint, GenerationParams } from "../../shared/generation.ts";
import { parseRubricOutput, RUBRIC_CONSTRAINT, VALIDATE_VERDICTS } from "../../workers/lib/rubric.ts";
import { MODEL_CACHE } from "../helpers/network.ts";

// Constrained decoding on the real engine and the real builtin model: the output always follows the
// grammar, and the choice at each choice position is the model's own argmax among the allowed tokens
// (checked against plain onnxruntime forward passes, independent of transformers.js).

const GREEDY: GenerationParams = {
  max_tokens: 8,
  temperature: 0,
  top_p: 1,
  top_k: 0,
  presence_penalty: 0,
  frequency_penalty: 0,
  stop: [],
  seed: 0,
};
const PROMPTS = [
  "Claim: water boils at 100 degrees at sea level.",
  "The network is made of routers and miners.",
  "Is the sky green? Answer carefully.",
  "def add(a, b): return a - b  # adds two numbers",
  "Translate 'bonjour' to English: hello",
  "2 + 2 = 5",
  "Every miner signs its result before revealing it.",
  "zzz qqq xxx",
];

let engine: TransformersEngine;
let tokenizer: PreTrainedTokenizer;
let session: ort.InferenceSession;
let modelDir: string;
let cfg: { n_layer: number; n_head: number; n_embd: number; eos_token_id: number };

beforeAll(async () => {
  modelDir = await ensureBuiltinModel(MODEL_CACHE);
  cfg = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8"));
  engine = await loadTransformersEngine({ model: BUILTIN_MODEL_ID, device: "cpu", cacheDir: MODEL_CACHE, threads: 1 });
  tokenizer = await AutoTokenizer.from_pretrained(modelDir, { local_files_only: true });
  session = await ort.InferenceSession.create(join(modelDir, "onnx/model.onnx"), { executionProviders: ["cpu"], intraOpNumThreads: 1 });
}, 120_000);

afterAll(async () => {
  await engine?.dispose();
  await session?.release();
});

const encode = (text: string) => tokenizer.encode(text, { add_special_tokens: false });

/** Last-position logits of one full forward pass (no cache) over `ids`. */
async function lastLogits(ids: number[]): Promise<Float32Array> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let l = 0; l < cfg.n_layer; l++) {
    for (const k of ["key", "value"])
      feeds[`past_key_values.${l}.${k}`] = new ort.Tensor("float32", new Float32Array(0), [1, cfg.n_head, 0, cfg.n_embd / cfg.n_head]);
  }
  const n = ids.length;
  feeds.input_ids = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, n]);
  feeds.attention_mask = new ort.Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]);
  feeds.position_ids = new ort.Tensor(
    "int64",
    BigInt64Array.from({ length: n }, (_, i) => BigInt(i)),
    [1, n],
  );
  const out = await session.run(feeds);
  const vocab = out.logits.dims[2];
  return (out.logits.data as Float32Array).slice((n - 1) * vocab, n * vocab);
}

/** Reference: walk the grammar by hand, taking the argmax among the allowed tokens at every step. */
async function reference(prompt: string, constraint: GenerationConstraint): Promise<string> {
  const eos = cfg.eos_token_id;
  const state = new CompiledConstraint(constraint, encode, eos).start();
  const ids = tokenizer.encode(prompt, { add_special_tokens: true });
  const out: number[] = [];
  while (!state.done) {
    const allowed = state.allowed();
    let pick = allowed[0];
    if (allowed.length > 1) {
      const logits = await lastLogits([...ids, ...out]);
      for (const id of allowed) if (logits[id] > logits[pick]) pick = id;
    }
    state.accept(pick);
    out.push(pick);
  }
  return tokenizer.decode(
    out.filter((id) => id !== eos),
    { skip_special_tokens: true, clean_up_tokenization_spaces: false },
  );
}

async function constrained(prompt: string, constraint: GenerationConstraint, params: Partial<GenerationParams> = {}) {
  return engine.generateDetailed({ input: { prompt, prompt_type: 1 }, params: { ...GREEDY, ...params, constraint } });
}

describe("constrained decoding", () => {
  it("always produces a well-formed rubric verdict, deterministically, whatever the prompt", async () => {
    const grammar = /^VERDICT: (VALID|INVALID|RETRY|NEEDS_SPEC)\nSCORE: (10|[0-9])\nCONFIDENCE: (10|[0-9])$/;
    for (const prompt of PROMPTS) {
      const a = await constrained(prompt, RUBRIC_CONSTRAINT(VALIDATE_VERDICTS));
      expect(a.text).toMatch(grammar);
      expect(a.finish_reason).toBe("stop");
      const parsed = parseRubricOutput(a.text, VALIDATE_VERDICTS);
      expect(parsed).not.toBeNull();
      expect(parsed!.score).toBeGreaterThanOrEqual(0);
      expect(parsed!.score).toBeLessThanOrEqual(1);
      const b = await constrained(prompt, RUBRIC_CONSTRAINT(VALIDATE_VERDICTS));
      expect(b.text).toBe(a.text);
      expect(b.token_ids).toEqual(a.token_ids);
    }
    // Unconstrained, the same model writes free text, not a verdict.
    const free = await engine.generate({ input: { prompt: PROMPTS[0], prompt_type: 1 }, params: { ...GREEDY, max_tokens: 16 } });
    expect(free.text).not.toMatch(grammar);
  });

  it("chooses from the model's own logits: matches the argmax over allowed tokens, and differs across prompts", async () => {
    const options = [
      "VALID",
      "INVALID",
      "RETRY",
      "NEEDS_SPEC",
      "0",
      "1",
      "2",
      "3",
      "4",
      "5",
      "6",
      "7",
      "8",
      "9",
      "10",
      "yes",
      "no",
      "maybe",
    ];
    const grammar: GenerationConstraint = { segments: [{ literal: "Answer:" }, { choice: options.map((o) => ` ${o}`) }] };
    const picks = new Set<string>();
    for (const prompt of PROMPTS) {
      const got = await constrained(prompt, grammar);
      expect(got.text).toBe(await reference(prompt, grammar));
      expect(options.map((o) => `Answer: ${o}`)).toContain(got.text);
      picks.add(got.text);
    }
    // The choice is not hard-coded: different prompts lead the model to different options.
    expect(picks.size).toBeGreaterThan(1);
    // The rubric grammar follows the same rule at every choice position.
    for (const prompt of PROMPTS.slice(0, 3)) {
      expect((await constrained(prompt, RUBRIC_CONSTRAINT(VALIDATE_VERDICTS))).text).toBe(
        await reference(prompt, RUBRIC_CONSTRAINT(VALIDATE_VERDICTS)),
      );
    }
  });

  it("handles options that prefix each other, forced literals only, and seeded sampling within the grammar", async () => {
    const prefixes: GenerationConstraint = { segments: [{ choice: ["1", "10", "100"] }, { literal: "!" }] };
    for (const prompt of PROMPTS.slice(0, 4)) expect((await constrained(prompt, prefixes)).text).toMatch(/^(1|10|100)!$/);
    expect((await constrained("anything", { segments: [{ literal: "fixed text, forced" }] })).text).toBe("fixed text, forced");
    const sampled = new Set<string>();
    for (let seed = 0; seed < 12; seed++) {
      const r = await constrained(PROMPTS[1], { segments: [{ choice: ["alpha", "beta", "gamma", "delta"] }] }, { temperature: 2, seed });
      expect(["alpha", "beta", "gamma", "delta"]).toContain(r.text);
      const again = await constrained(
        PROMPTS[1],
        { segments: [{ choice: ["alpha", "beta", "gamma", "delta"] }] },
        { temperature: 2, seed },
      );
      expect(again.text).toBe(r.text);
      sampled.add(r.text);
    }
    expect(sampled.size).toBeGreaterThan(1);
  });
});
