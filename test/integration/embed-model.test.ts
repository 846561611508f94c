import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AutoTokenizer } from "@huggingface/transformers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cosineDistance } from "../../durable-objects/similarity.ts";
import { type Embedder, loadEmbedder } from "../../miner-agent/src/embedder.ts";
import { embedWeightsDir, ensureBuiltinEmbeddingModel, loadTokenVectors } from "../../miner-agent/src/model/embedding.ts";
import { MODEL_CACHE, tempDir } from "../helpers/network.ts";

// The builtin embedding model edge/tiny-embed as the miner builds it from the weights models/embed/train.py
// trained and committed: the ONNX that transformers.js runs must reproduce training (same token ids, same
// vectors as torch), be the same bytes on every build, refuse weights that do not match their manifest, and
// place held-out paraphrases closer than unrelated sentences (models/embed/eval-pairs.jsonl: WordNet synsets
// that never reached training).

interface Pair {
  kind: "paraphrase" | "related" | "unrelated";
  a: string;
  b: string;
}
const weights = embedWeightsDir();
const reference: { texts: string[]; ids: number[][]; vectors: number[][] } = JSON.parse(
  readFileSync(join(weights, "reference.json"), "utf8"),
);
const pairs: Pair[] = readFileSync(join(weights, "eval-pairs.jsonl"), "utf8")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l));

let embedder: Embedder;
beforeAll(async () => {
  embedder = await loadEmbedder({ model: "edge/tiny-embed", cacheDir: MODEL_CACHE, device: "cpu", threads: 1 });
}, 120_000);
afterAll(() => embedder?.dispose());

describe("edge/tiny-embed built from the committed weights", () => {
  it("tokenizes exactly as training did and reproduces torch's vectors", async () => {
    const tokenizer = await AutoTokenizer.from_pretrained(await ensureBuiltinEmbeddingModel(MODEL_CACHE), { local_files_only: true });
    expect(reference.texts.length).toBeGreaterThanOrEqual(100);
    for (const [i, text] of reference.texts.entries()) expect(tokenizer.encode(text), text).toEqual(reference.ids[i]);
    const vectors = await embedder.embed(reference.texts.slice(0, reference.vectors.length));
    for (const [i, v] of vectors.entries()) {
      expect(v.length).toBe(reference.vectors[i].length);
      for (const [j, x] of v.entries()) expect(Math.abs(x - reference.vectors[i][j])).toBeLessThan(1e-5);
    }
  });

  it("builds the same ONNX bytes every time", async () => {
    const sha = async (cache: string) => {
      const dir = await ensureBuiltinEmbeddingModel(cache);
      return createHash("sha256")
        .update(readFileSync(join(dir, "onnx/model.onnx")))
        .digest("hex");
    };
    const [a, b] = await Promise.all([sha(tempDir("embed-a")), sha(tempDir("embed-b"))]);
    expect(a).toBe(b);
    expect(
      JSON.parse(readFileSync(join(await ensureBuiltinEmbeddingModel(MODEL_CACHE), "build-info.json"), "utf8")).model_onnx_sha256,
    ).toBe(a);
  });

  it("refuses weights that do not match their manifest", async () => {
    const manifest = JSON.parse(readFileSync(join(weights, "manifest.json"), "utf8"));
    const copy = tempDir("embed-tampered");
    copyFileSync(join(weights, "embeddings.bin"), join(copy, "embeddings.bin"));
    await expect(loadTokenVectors(copy, manifest)).resolves.toHaveLength(manifest.vocab_size * manifest.hidden_size);
    const blob = readFileSync(join(copy, "embeddings.bin"));
    blob[blob.length - 1] ^= 1; // one bit of one token's vector
    writeFileSync(join(copy, "embeddings.bin"), blob);
    await expect(loadTokenVectors(copy, manifest)).rejects.toThrow(/does not match its manifest/);
    await expect(
      loadTokenVectors(copy, { ...manifest, sha256: createHash("sha256").update(blob).digest("hex"), vocab_size: 10 }),
    ).rejects.toThrow(/wrong size/);
  });

  it("places held-out paraphrases and related sentences closer than unrelated ones", async () => {
    const a = await embedder.embed(pairs.map((p) => p.a));
    const b = await embedder.embed(pairs.map((p) => p.b));
    const by: Record<string, number[]> = { paraphrase: [], related: [], unrelated: [] };
    for (const [i, p] of pairs.entries()) by[p.kind].push(cosineDistance(a[i], b[i]));
    for (const d of Object.values(by)) expect(d.length).toBe(200);
    const auc = (pos: number[], neg: number[]) => pos.reduce((s, p) => s + neg.filter((n) => p < n).length, 0) / (pos.length * neg.length);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean(by.paraphrase)).toBeLessThan(mean(by.unrelated) - 0.3);
    expect(auc(by.paraphrase, by.unrelated)).toBeGreaterThan(0.95);
    // Definition vs usage example share almost no words: random token vectors rank these at chance (AUC ~0.5).
    expect(auc(by.related, by.unrelated)).toBeGreaterThan(0.8);
  });
});
