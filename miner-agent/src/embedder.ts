import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { type FeatureExtractionPipeline, pipeline } from "@huggingface/transformers";
import { BUILTIN_EMBEDDING_MODEL_ID, ensureBuiltinEmbeddingModel } from "./model/embedding.ts";

// Sentence embeddings for validation work: transformers.js feature extraction (mean pooling, L2 norm).
// Loaded on first use; calls run one at a time, like the engine, so validation never oversubscribes cores.

export interface Embedder {
  readonly model: string;
  embed(texts: string[]): Promise<number[][]>;
  dispose(): Promise<void>;
}

export interface EmbedderOptions {
  model: string;
  cacheDir: string;
  device: "cpu" | "webgpu";
  threads?: number;
}

export async function loadEmbedder(opts: EmbedderOptions): Promise<Embedder> {
  let path = opts.model;
  let localOnly = false;
  if (opts.model === BUILTIN_EMBEDDING_MODEL_ID) {
    path = await ensureBuiltinEmbeddingModel(opts.cacheDir, opts.model);
    localOnly = true;
  } else if (isAbsolute(opts.model) || opts.model.startsWith(".") || existsSync(opts.model)) {
    path = resolve(opts.model);
    localOnly = true;
  }
  const threads = opts.threads ?? 0;
  const extractor: FeatureExtractionPipeline = await pipeline("feature-extraction", path, {
    local_files_only: localOnly,
    cache_dir: opts.cacheDir,
    device: opts.device,
    dtype: "fp32",
    ...(threads > 0 ? { session_options: { intraOpNumThreads: threads, interOpNumThreads: 1 } } : {}),
  });
  let tail: Promise<unknown> = Promise.resolve();
  return {
    model: opts.model,
    embed(texts) {
      const run = tail.then(async () => {
        if (texts.length === 0) return [];
        const out = await extractor(texts, { pooling: "mean", normalize: true });
        return out.tolist() as number[][];
      });
      tail = run.catch(() => {});
      return run;
    },
    dispose: () => extractor.dispose(),
  };
}
