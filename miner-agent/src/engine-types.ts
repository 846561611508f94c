import type { GenerationParams, PromptSpec } from "../../shared/generation.ts";

export type DeviceChoice = "cpu" | "webgpu" | "auto";

export interface GenerateRequest {
  input: PromptSpec;
  params: GenerationParams;
  /** Called with each new piece of decoded text, in order; the pieces concatenate to the final text. */
  onToken?: (text: string) => void;
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  finish_reason: "stop" | "length";
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Wall time spent in the engine for this request, ms. */
  inference_ms: number;
  /** The completion's token ids: only when the task is verified (params.verify), which commits them. */
  token_ids?: number[];
}

/** What the model can read (declared at registration: shared/api.ts ModelContext, less the model id). */
export interface EngineContext {
  positions: number;
  /** Longest token in input bytes; only for byte-level BPE without a normalizer, where it bounds token counts. */
  max_token_bytes?: number;
}

/** The prompt (or a grammar's longest completion) does not fit the model's context: the task is refused as such. */
export class ContextLengthError extends Error {
  override name = "ContextLengthError";
  readonly code = "context_length_exceeded";
}

export interface Engine {
  readonly model: string;
  readonly device: "cpu" | "webgpu";
  /** Absent: unknown (the router then cannot refuse oversized prompts early). */
  readonly context?: EngineContext;
  generate(req: GenerateRequest): Promise<GenerateResult>;
  dispose(): Promise<void>;
}

export interface LoadProgress {
  status: string;
  file?: string;
  /** 0–100 when known. */
  progress?: number;
}

export interface LoadEngineOptions {
  model: string;
  device: DeviceChoice;
  cacheDir: string;
  /** onnxruntime intra-op threads; 0 or absent leaves its default. */
  threads?: number;
  onProgress?: (p: LoadProgress) => void;
}
