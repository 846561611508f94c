import { execFile } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { AutoTokenizer, type PreTrainedTokenizer } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bareDecode } from "../../miner-agent/src/bare-loop.ts";
import { loadTransformersEngine, type TransformersEngine } from "../../miner-agent/src/engine.ts";
import { BUILTIN_CONFIG, BUILTIN_MODEL_ID, ensureBuiltinModel, MODEL_FILES } from "../../miner-agent/src/model/build.ts";
import { IncrementalDetokenizer, StopMatcher } from "../../miner-agent/src/model/text-stream.ts";
import type { GenerationParams } from "../../shared/generation.ts";

// The real engine on the real builtin model (built into a temp dir): no stubs anywhere.

const GREEDY: GenerationParams = {
  max_tokens: 24,
  temperature: 0,
  top_p: 1,
  top_k: 0,
  presence_penalty: 0,
  frequency_penalty: 0,
  stop: [],
  seed: 0,
};
const PROMPT = "The network is made of routers and miners.";

let cacheDir: string;
let modelDir: string;
let engine: TransformersEngine;
let tokenizer: PreTrainedTokenizer;

async function run(e: TransformersEngine, prompt: string, params: Partial<GenerationParams> = {}) {
  const pieces: string[] = [];
  const r = await e.generateDetailed({
    input: { prompt, prompt_type: 1 },
    params: { ...GREEDY, ...params },
    onToken: (t) => pieces.push(t),
  });
  return { ...r, pieces };
}

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "engine-test-"));
  modelDir = await ensureBuiltinModel(cacheDir);
  engine = await loadTransformersEngine({ model: BUILTIN_MODEL_ID, device: "cpu", cacheDir });
  tokenizer = await AutoTokenizer.from_pretrained(modelDir, { local_files_only: true });
}, 120_000);

afterAll(async () => {
  await engine?.dispose();
  await rm(cacheDir, { recursive: true, force: true });
});

describe("builtin model", () => {
  it("is a complete local Hugging Face model folder, reused once built", async () => {
    expect(modelDir).toBe(join(cacheDir, BUILTIN_MODEL_ID));
    for (const f of MODEL_FILES) expect(existsSync(join(modelDir, f))).toBe(true);
    const config = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8"));
    expect(config).toMatchObject({
      model_type: "gpt2",
      n_layer: BUILTIN_CONFIG.n_layer,
      n_embd: BUILTIN_CONFIG.n_embd,
      vocab_size: BUILTIN_CONFIG.vocab_size,
    });
    const tok = JSON.parse(await readFile(join(modelDir, "tokenizer.json"), "utf8"));
    expect(tok.model.type).toBe("BPE");
    expect(Object.keys(tok.model.vocab)).toHaveLength(BUILTIN_CONFIG.vocab_size);
    expect(tok.model.vocab["<|endoftext|>"]).toBe(config.eos_token_id);

    const mtime = statSync(join(modelDir, "onnx/model.onnx")).mtimeMs;
    expect(await ensureBuiltinModel(cacheDir)).toBe(modelDir);
    expect(statSync(join(modelDir, "onnx/model.onnx")).mtimeMs).toBe(mtime);
  });

  it("has the gpt2-with-past interface and a KV cache and padding mask that match a full forward pass", async () => {
    const s = await ort.InferenceSession.create(join(modelDir, "onnx/model.onnx"));
    const L = BUILTIN_CONFIG.n_layer,
      H = BUILTIN_CONFIG.n_head,
      D = BUILTIN_CONFIG.n_embd / H,
      V = BUILTIN_CONFIG.vocab_size;
    expect(s.inputNames.slice(0, 3)).toEqual(["input_ids", "attention_mask", "position_ids"]);
    expect(s.outputNames).toContain(`present.${L - 1}.value`);
    const i64 = (a: number[], dims: number[]) => new ort.Tensor("int64", BigInt64Array.from(a, BigInt), dims);
    const empty = (b: number) =>
      Object.fromEntries(
        Array.from({ length: L }, (_, l) =>
          ["key", "value"].map((k) => [`past_key_values.${l}.${k}`, new ort.Tensor("float32", new Float32Array(0), [b, H, 0, D])]),
        ).flat(),
      );
    const past = (o: ort.InferenceSession.ReturnType) =>
      Object.fromEntries(
        Object.keys(o)
          .filter((k) => k.startsWith("present"))
          .map((k) => [k.replace("present", "past_key_values"), o[k]]),
      );
    const ids = [10, 300, 45, 700, 12];
    const ones = (n: number) => new Array(n).fill(1);
    const close = (a: Float32Array, b: Float32Array) => a.every((x, i) => Math.abs(x - b[i]) < 1e-3);

    const full = await s.run({
      input_ids: i64(ids, [1, 5]),
      attention_mask: i64(ones(5), [1, 5]),
      position_ids: i64([0, 1, 2, 3, 4], [1, 5]),
      ...empty(1),
    });
    const last = (full.logits.data as Float32Array).slice(4 * V);
    let o = await s.run({
      input_ids: i64(ids.slice(0, 4), [1, 4]),
      attention_mask: i64(ones(4), [1, 4]),
      position_ids: i64([0, 1, 2, 3], [1, 4]),
      ...empty(1),
    });
    o = await s.run({ input_ids: i64([ids[4]], [1, 1]), attention_mask: i64(ones(5), [1, 5]), position_ids: i64([4], [1, 1]), ...past(o) });
    expect(o["present.0.key"].dims).toEqual([1, H, 5, D]);
    expect(close(o.logits.data as Float32Array, last)).toBe(true);

    // Batch of two, the first left-padded: its last logits equal the unpadded run of the same tokens.
    const short = await s.run({
      input_ids: i64(ids.slice(2), [1, 3]),
      attention_mask: i64(ones(3), [1, 3]),
      position_ids: i64([0, 1, 2], [1, 3]),
      ...empty(1),
    });
    const b = await s.run({
      input_ids: i64([0, 0, ...ids.slice(2), ...ids], [2, 5]),
      attention_mask: i64([0, 0, 1, 1, 1, ...ones(5)], [2, 5]),
      position_ids: i64([1, 1, 0, 1, 2, 0, 1, 2, 3, 4], [2, 5]),
      ...empty(2),
    });
    const bl = b.logits.data as Float32Array;
    expect(close(bl.slice(4 * V, 5 * V), (short.logits.data as Float32Array).slice(2 * V))).toBe(true);
    expect(close(bl.slice(9 * V), last)).toBe(true);
    await s.release();
  });
});

describe("engine", () => {
  it("reports what it loaded", () => {
    expect(engine.model).toBe(BUILTIN_MODEL_ID);
    expect(engine.device).toBe("cpu");
  });

  it("is deterministic when greedy, across engines, and streams pieces that concatenate to the text", async () => {
    const a = await run(engine, PROMPT);
    const b = await run(engine, PROMPT);
    expect(b.text).toBe(a.text);
    expect(a.pieces.join("")).toBe(a.text);
    expect(a.text.length).toBeGreaterThan(0);
    expect(a.text).toBe(tokenizer.decode(a.token_ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }));
    // Not one token over and over (a tiny trained model may loop over a phrase under greedy decoding, never one token).
    const counts = new Map<number, number>();
    for (const id of a.token_ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect(counts.size).toBeGreaterThan(4);
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(a.token_ids.length / 3);
    expect(a.inference_ms).toBeGreaterThan(0);

    const other = await loadTransformersEngine({ model: BUILTIN_MODEL_ID, device: "cpu", cacheDir });
    try {
      expect((await run(other, PROMPT)).text).toBe(a.text);
    } finally {
      await other.dispose();
    }
  });

  it("gives the same greedy text in a separate process", async () => {
    const local = await run(engine, PROMPT);
    // Node >= 22.18 runs the .ts sources directly; prefer the repo's pinned Node when present.
    const repoNode = resolve("node_modules/.bin/node");
    const node = existsSync(repoNode) ? repoNode : process.execPath;
    const script = `
      const { loadEngine } = await import(${JSON.stringify(pathToFileURL(resolve("miner-agent/src/engine.ts")).href)});
      const e = await loadEngine({ model: ${JSON.stringify(BUILTIN_MODEL_ID)}, device: "cpu", cacheDir: ${JSON.stringify(cacheDir)} });
      const r = await e.generate({ input: { prompt: ${JSON.stringify(PROMPT)}, prompt_type: 1 }, params: ${JSON.stringify(GREEDY)} });
      process.stdout.write(JSON.stringify(r.text));
      await e.dispose();`;
    const { stdout } = await promisify(execFile)(node, ["--no-warnings", "--input-type=module", "-e", script]);
    expect(JSON.parse(stdout)).toBe(local.text);
  });

  it("greedy output ids equal a bare onnxruntime decode loop's", async () => {
    const r = await run(engine, PROMPT, { max_tokens: 48 });
    const bare = await bareDecode(modelDir, tokenizer.encode(PROMPT), 48);
    expect(r.token_ids).toEqual(bare.ids);
    expect(r.usage.prompt_tokens).toBe(tokenizer.encode(PROMPT).length);
  });

  it("finishes with length at max_tokens, counting completion tokens", async () => {
    const r = await run(engine, PROMPT, { max_tokens: 17 });
    const { eos_token_id } = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8"));
    if (r.finish_reason === "length") expect(r.usage.completion_tokens).toBe(17);
    else expect(r.token_ids.at(-1)).toBe(eos_token_id); // EOS before the limit
    expect(r.usage.completion_tokens).toBe(r.token_ids.length);
  });

  it("cuts the text before the earliest stop string and never streams part of it", async () => {
    const base = await run(engine, PROMPT, { max_tokens: 40 });
    const stop = base.text.slice(Math.floor(base.text.length / 2), Math.floor(base.text.length / 2) + 3);
    const cut = base.text.indexOf(stop);
    const r = await run(engine, PROMPT, { max_tokens: 40, stop: ["never-appears", stop] });
    expect(r.finish_reason).toBe("stop");
    expect(r.text).toBe(base.text.slice(0, cut));
    expect(r.pieces.join("")).toBe(r.text);
    expect(r.usage.completion_tokens).toBeLessThan(40);
  });

  it("samples reproducibly for a seed, differently for another seed", async () => {
    const sampled = { temperature: 0.9, top_p: 0.95, top_k: 50, max_tokens: 32 };
    const a = await run(engine, PROMPT, { ...sampled, seed: 7 });
    const b = await run(engine, PROMPT, { ...sampled, seed: 7 });
    const c = await run(engine, PROMPT, { ...sampled, seed: 8 });
    const greedy = await run(engine, PROMPT, { max_tokens: 32 });
    expect(b.text).toBe(a.text);
    expect(a.pieces.join("")).toBe(a.text);
    expect(c.text).not.toBe(a.text);
    expect(a.text).not.toBe(greedy.text);
  });

  it("applies presence and frequency penalties", async () => {
    const plain = await run(engine, PROMPT, { max_tokens: 48 });
    const penalized = await run(engine, PROMPT, { max_tokens: 48, presence_penalty: 2, frequency_penalty: 2 });
    expect(penalized.text).not.toBe(plain.text);
    const repeats = (ids: number[]) => ids.length - new Set(ids).size;
    expect(repeats(penalized.token_ids)).toBeLessThan(repeats(plain.token_ids));
  });

  it("renders prompt templates before tokenizing", async () => {
    const templated = await engine.generate({
      input: { prompt: "hello", prompt_type: 0, prompt_template: "Q: {prompt}\nA:" },
      params: GREEDY,
    });
    const raw = await run(engine, "Q: hello\nA:");
    expect(templated.text).toBe(raw.text);
    expect(templated.usage.prompt_tokens).toBe(raw.usage.prompt_tokens);
  });

  it("serializes concurrent requests with results identical to sequential ones", async () => {
    const prompts = ["One, two, three", "Water is", PROMPT];
    const sequential = [];
    for (const p of prompts) sequential.push((await run(engine, p)).text);
    const concurrent = await Promise.all(prompts.map((p) => run(engine, p)));
    expect(concurrent.map((r) => r.text)).toEqual(sequential);
  });

  it("stops on abort, rejects queued requests at once, and keeps working", async () => {
    const ac = new AbortController();
    let tokens = 0;
    const running = engine.generate({
      input: { prompt: PROMPT, prompt_type: 1 },
      params: { ...GREEDY, max_tokens: 400 },
      signal: ac.signal,
      onToken: () => {
        if (++tokens === 3) ac.abort();
      },
    });
    const queuedAc = new AbortController();
    const queued = engine.generate({ input: { prompt: PROMPT, prompt_type: 1 }, params: GREEDY, signal: queuedAc.signal });
    queuedAc.abort();
    await expect(queued).rejects.toMatchObject({ name: "AbortError" });
    await expect(running).rejects.toMatchObject({ name: "AbortError" });
    expect(tokens).toBeLessThan(10);
    expect((await run(engine, PROMPT)).text).toBe((await run(engine, PROMPT)).text);
  });

  it("handles an empty prompt and rejects prompts beyond the context", async () => {
    const r = await run(engine, "", { max_tokens: 5 });
    expect(r.usage.prompt_tokens).toBe(1); // <|endoftext|> as bos
    await expect(run(engine, "word ".repeat(BUILTIN_CONFIG.n_positions + 10))).rejects.toThrow(/context/);
  });
});

describe("text streaming", () => {
  it("holds back a possible stop-string prefix until it is resolved", () => {
    const m = new StopMatcher(["END", "xyz"]);
    expect(m.push("abc E")).toBe("abc ");
    expect(m.push("N")).toBe("");
    expect(m.push("ding x")).toBe("ENding ");
    expect(m.push("y")).toBe(""); // could still become "xyz"
    expect(m.push("E")).toBe("xy");
    expect(m.push("ND more")).toBe("");
    expect(m.stopped).toBe(true);
    expect(m.result).toBe("abc ENding xy");
    const open = new StopMatcher(["END"]);
    expect(open.push("tail E")).toBe("tail ");
    expect(open.finish()).toBe("E");
    expect(open.result).toBe("tail E");
  });

  it("emits multi-byte characters whole even when tokens split their bytes", () => {
    const text = "caf\u00e9 \u{1F600} ok";
    const ids = tokenizer.encode(text);
    const detok = new IncrementalDetokenizer((x) => tokenizer.decode(x, { clean_up_tokenization_spaces: false }), tokenizer.encode("Say"));
    const pieces = ids.map((id) => detok.push(id));
    pieces.push(detok.flush());
    expect(pieces.join("")).toBe(text);
    expect(pieces.some((p) => p.includes("\uFFFD"))).toBe(false);
  });
});

describe("device selection", () => {
  it("auto falls back to CPU when WebGPU is unavailable and reports the device used", async () => {
    const e = await loadTransformersEngine({ model: BUILTIN_MODEL_ID, device: "auto", cacheDir });
    try {
      expect(["cpu", "webgpu"]).toContain(e.device);
      expect((await run(e, PROMPT, { max_tokens: 8 })).usage.completion_tokens).toBe(8);
    } finally {
      await e.dispose();
    }
  });
});
