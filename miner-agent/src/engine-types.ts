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
}

export interface Engine {
  readonly model: string;
  readonly device: "cpu" | "webgpu";
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
