// Inference engine: transformers.js tokenizer + causal LM with KV cache, driven through
// model.generate() with our own streamer, stopping criteria and decoding policy.
import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  BaseStreamer,
  LogitsProcessorList,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  StoppingCriteria,
  Tensor,
  type TextStreamer,
} from "@huggingface/transformers";
import { renderPrompt } from "../../shared/generation.ts";
import {
  ContextLengthError,
  type Engine,
  type EngineContext,
  type GenerateRequest,
  type GenerateResult,
  type LoadEngineOptions,
  type LoadProgress,
} from "./engine-types.ts";
import { BUILTIN_MODEL_ID, ensureBuiltinModel } from "./model/build.ts";
import { CompiledConstraint, ConstraintProcessor } from "./model/constrained.ts";
import { DecodingPolicy } from "./model/sampling.ts";
import { IncrementalDetokenizer, StopMatcher } from "./model/text-stream.ts";
import { ZERO_COST_MODEL, ZeroCostEngine } from "./zero-cost-engine.ts";

/** A teacher-forced pass (TransformersEngine.rescore): the logits that predict each completion token. */
export interface Rescored {
  promptIds: number[];
  logits: Float32Array;
  vocab: number;
  eos: number[];
  decode(ids: number[]): string;
  /** The model's positions (Infinity: unknown): generation stops where prompt + completion fill them. */
  context: number;
}

/** GenerateResult plus the completion's token ids (for tests and benchmarks). */
export interface DetailedResult extends GenerateResult {
  token_ids: number[];
}

/** Hands each generated token to `onStep`; the first put() (the prompt) is skipped. */
class StepStreamer extends BaseStreamer {
  private prompt = true;
  private readonly onStep: (id: number) => void;
  constructor(onStep: (id: number) => void) {
    super();
    this.onStep = onStep;
  }
  override put(value: bigint[][]): void {
    if (this.prompt) {
      this.prompt = false;
      return;
    }
    this.onStep(Number(value[0][0]));
  }
  override end(): void {}
}

class Until extends StoppingCriteria {
  private readonly done: (ids: number[]) => boolean;
  constructor(done: (ids: number[]) => boolean) {
    super();
    this.done = done;
  }
  override _call(inputIds: number[][]): boolean[] {
    return inputIds.map((ids) => this.done(ids));
  }
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

export class TransformersEngine implements Engine {
  readonly model: string;
  readonly device: "cpu" | "webgpu";
  private readonly lm: PreTrainedModel;
  private readonly tokenizer: PreTrainedTokenizer;
  private readonly eos: Set<number>;
  private readonly contextLimit: number;
  readonly context?: EngineContext;
  // Requests run one at a time, FIFO: one generate() already uses every core ORT is given, and
  // interleaving would only add contention (and make timings meaningless).
  private tail: Promise<unknown> = Promise.resolve();
  private disposed = false;

  constructor(model: string, device: "cpu" | "webgpu", lm: PreTrainedModel, tokenizer: PreTrainedTokenizer) {
    this.model = model;
    this.device = device;
    this.lm = lm;
    this.tokenizer = tokenizer;
    const cfg = lm.config as unknown as Record<string, unknown>;
    const gen = (lm as unknown as { generation_config?: Record<string, unknown> }).generation_config ?? {};
    const eos = gen.eos_token_id ?? cfg.eos_token_id;
    this.eos = new Set((Array.isArray(eos) ? eos : eos == null ? [] : [eos]).map(Number));
    const limit = Number(cfg.n_positions ?? cfg.max_position_embeddings ?? 0);
    this.contextLimit = limit > 0 ? limit : Infinity;
    if (limit > 0) {
      const maxTokenBytes = byteLevelMaxTokenBytes(tokenizer);
      this.context = { positions: limit, ...(maxTokenBytes ? { max_token_bytes: maxTokenBytes } : {}) };
    }
  }

  generate(req: GenerateRequest): Promise<GenerateResult> {
    // A verified task commits its token ids (validators re-score them: verifier.ts).
    if (req.params.verify) return this.generateDetailed(req);
    return this.generateDetailed(req).then(({ token_ids: _, ...result }) => result);
  }

  /**
   * Verified sampling (verifier.ts): one teacher-forced forward pass over prompt + completion, in the same queue as
   * generation. Row i of `logits` (each `vocab` wide) is what the model predicts for completion token i.
   */
  rescore(input: GenerateRequest["input"], ids: readonly number[]): Promise<Rescored> {
    const run = async (): Promise<Rescored> => {
      const promptIds = this.encodePrompt(input);
      const seq = [...promptIds, ...ids.slice(0, -1)];
      if (ids.length === 0 || seq.length > this.contextLimit) throw new ContextLengthError(`${seq.length + 1} tokens do not fit`);
      const n = seq.length;
      const out = (await this.lm({
        input_ids: new Tensor("int64", BigInt64Array.from(seq, BigInt), [1, n]),
        attention_mask: new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]),
      })) as { logits: Tensor };
      const vocab = out.logits.dims[2];
      const all = out.logits.data as Float32Array;
      const logits = all.slice((promptIds.length - 1) * vocab, n * vocab);
      const decode = (t: number[]) => this.tokenizer.decode(t, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
      return { promptIds, logits, vocab, eos: [...this.eos], decode, context: this.contextLimit };
    };
    const result = this.tail.then(run, run);
    this.tail = result.catch(() => {});
    return result;
  }

  /** Same as generate(), also returning the completion's token ids. */
  generateDetailed(req: GenerateRequest): Promise<DetailedResult> {
    if (this.disposed) return Promise.reject(new Error("engine disposed"));
    const { signal } = req;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<DetailedResult>((resolveResult, reject) => {
      let cancelled = false;
      const onAbort = () => {
        cancelled = true; // still queued: leave the queue at once; running: the stop check ends it
        reject(abortError(signal!));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const run = async () => {
        if (cancelled) return;
        try {
          resolveResult(await this.run(req));
        } catch (err) {
          reject(err);
        } finally {
          signal?.removeEventListener("abort", onAbort);
        }
      };
      this.tail = this.tail.then(run, run);
    });
  }

  private async run(req: GenerateRequest): Promise<DetailedResult> {
    const t0 = performance.now();
    const { params, signal, onToken } = req;
    const promptIds = this.encodePrompt(req.input);
    const room = this.contextLimit - promptIds.length;
    if (room < 1) throw new ContextLengthError(`prompt is ${promptIds.length} tokens; the model's context is ${this.contextLimit}`);
    // A constraint (see model/constrained.ts) bounds the completion's length itself.
    const constraint = params.constraint
      ? new ConstraintProcessor(this.compileConstraint(params.constraint).start(), promptIds.length)
      : null;
    const maxNew = constraint ? this.constraintBudget(room, params.constraint!) : Math.min(params.max_tokens, room);

    const decode = (ids: number[]) => this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
    const detok = new IncrementalDetokenizer(decode, promptIds);
    const stops = new StopMatcher(constraint ? [] : params.stop);
    const ids: number[] = [];
    let sawEos = false;
    const emit = (piece: string) => {
      if (piece) onToken?.(piece);
    };
    const streamer = new StepStreamer((id) => {
      ids.push(id);
      if (this.eos.has(id)) {
        sawEos = true;
        return;
      }
      if (!signal?.aborted) emit(stops.push(detok.push(id)));
    });
    const processors = new LogitsProcessorList();
    if (constraint) processors.push(constraint); // masks first: penalties and sampling see allowed tokens only
    processors.push(new DecodingPolicy(params, promptIds.length));

    const n = promptIds.length;
    await this.lm.generate({
      input_ids: new Tensor("int64", BigInt64Array.from(promptIds, BigInt), [1, n]),
      attention_mask: new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]),
      max_new_tokens: maxNew,
      // Sampling (when asked for) happens in DecodingPolicy; these keep a model's own
      // generation_config.json from adding sampling, beams or penalties of its own.
      do_sample: false,
      num_beams: 1,
      num_return_sequences: 1,
      temperature: 1,
      top_k: 0,
      top_p: 1,
      repetition_penalty: 1,
      no_repeat_ngram_size: 0,
      min_length: 0,
      min_new_tokens: 0,
      logits_processor: processors,
      stopping_criteria: [
        new Until((all) => {
          if (stops.stopped || signal?.aborted) return true;
          if (!constraint) return false;
          constraint.sync(all as unknown as bigint[]);
          return constraint.state.done;
        }),
      ],
      // The typings intersect BaseStreamer with TextStreamer; generate() only calls put()/end().
      streamer: streamer as unknown as TextStreamer,
    });
    if (signal?.aborted) throw abortError(signal);

    if (!stops.stopped) emit(stops.push(detok.flush()));
    emit(stops.finish());
    return {
      text: stops.result,
      finish_reason: stops.stopped || sawEos ? "stop" : "length",
      usage: { prompt_tokens: n, completion_tokens: ids.length },
      inference_ms: performance.now() - t0,
      token_ids: ids,
    };
  }

  /** The prompt's token ids: chat-templated when the model has a template; a lone bos when it is empty. */
  private encodePrompt(input: GenerateRequest["input"]): number[] {
    let templated = false;
    const chatTemplate = this.tokenizer.chat_template
      ? (prompt: string) => {
          templated = true;
          return this.tokenizer.apply_chat_template([{ role: "user", content: prompt }], {
            tokenize: false,
            add_generation_prompt: true,
          }) as string;
        }
      : undefined;
    const prompt = renderPrompt(input, chatTemplate);
    // A chat template already contains the special tokens it needs.
    const promptIds = this.tokenizer.encode(prompt, { add_special_tokens: !templated });
    if (promptIds.length > 0) return promptIds;
    const bos = (this.lm.config as unknown as { bos_token_id?: number }).bos_token_id ?? [...this.eos][0];
    if (bos == null) throw new Error("empty prompt and the model has no bos token");
    return [bos];
  }

  private readonly constraints = new Map<string, CompiledConstraint>();

  /** Compiled grammars, cached by their JSON (validators send the same rubric grammar every time). */
  compileConstraint(c: NonNullable<GenerateRequest["params"]["constraint"]>): CompiledConstraint {
    const key = JSON.stringify(c);
    let compiled = this.constraints.get(key);
    if (!compiled) {
      const encode = (text: string) => this.tokenizer.encode(text, { add_special_tokens: false });
      compiled = new CompiledConstraint(c, encode, this.eos.size > 0 ? Math.min(...this.eos) : null);
      if (this.constraints.size >= 64) this.constraints.delete(this.constraints.keys().next().value!);
      this.constraints.set(key, compiled);
    }
    return compiled;
  }

  private constraintBudget(room: number, c: NonNullable<GenerateRequest["params"]["constraint"]>): number {
    const need = this.compileConstraint(c).maxTokens;
    if (need > room) throw new ContextLengthError(`the constrained completion may take ${need} tokens; only ${room} fit after the prompt`);
    return Math.max(1, need);
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    await this.tail.catch(() => {});
    await this.lm.dispose();
  }
}

/**
 * The longest token in input bytes, when the tokenizer is byte-level BPE without a normalizer: each vocabulary
 * symbol then stands for exactly one byte, so a token covers at most that many bytes of the text and a prompt
 * of B bytes takes at least ceil(B / it) tokens. Undefined for any other tokenizer (no such bound is sound).
 */
export function byteLevelMaxTokenBytes(tokenizer: PreTrainedTokenizer): number | undefined {
  const json = (tokenizer as unknown as { _tokenizerJSON?: TokenizerJson })._tokenizerJSON;
  const byteLevel = (p: { type?: string; pretokenizers?: { type?: string }[] } | null | undefined): boolean =>
    p?.type === "ByteLevel" || (p?.type === "Sequence" && !!p.pretokenizers?.some((x) => x.type === "ByteLevel"));
  if (!json || json.normalizer || json.model?.type !== "BPE" || !byteLevel(json.pre_tokenizer)) return undefined;
  const vocab = Object.keys(json.model.vocab ?? {});
  if (vocab.length === 0) return undefined;
  const encoder = new TextEncoder();
  // reduce, not Math.max(...): vocabularies run to hundreds of thousands of entries.
  const longest = vocab.reduce((n, v) => Math.max(n, [...v].length), 0);
  return (json.added_tokens ?? []).reduce((n, t) => Math.max(n, encoder.encode(t.content).length), longest);
}

interface TokenizerJson {
  normalizer?: unknown;
  pre_tokenizer?: { type?: string; pretokenizers?: { type?: string }[] } | null;
  model?: { type?: string; vocab?: Record<string, number> };
  added_tokens?: { content: string }[];
}

function isLocalPath(model: string): boolean {
  return isAbsolute(model) || model.startsWith(".") || existsSync(model);
}

async function loadOn(
  device: "cpu" | "webgpu",
  path: string,
  localOnly: boolean,
  cacheDir: string,
  onProgress?: (p: LoadProgress) => void,
  threads = 0,
): Promise<{ lm: PreTrainedModel; tokenizer: PreTrainedTokenizer }> {
  // Per-call options rather than the global `env`, so engines for different models can coexist.
  const common = {
    local_files_only: localOnly,
    cache_dir: cacheDir,
    progress_callback: (p: { status: string; file?: string; progress?: number }) =>
      onProgress?.({ status: p.status, file: p.file, progress: p.progress }),
  };
  const tokenizer = await AutoTokenizer.from_pretrained(path, common);
  // Several miners on one machine each spinning a thread per core starve each other: --threads caps it.
  const session_options = threads > 0 ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : undefined;
  const lm = await AutoModelForCausalLM.from_pretrained(path, { ...common, device, ...(session_options ? { session_options } : {}) });
  return { lm, tokenizer };
}

/**
 * Loads a model and returns a ready (warmed-up) engine. `opts.model` is the builtin id (built into
 * `<cacheDir>/<id>/` on first use and always loaded from there, never from a hub), a local model
 * folder, or any transformers.js model id (downloaded into `cacheDir`). device "auto" tries WebGPU
 * and falls back to CPU; `engine.device` says which one is in use.
 */
export async function loadTransformersEngine(opts: LoadEngineOptions): Promise<TransformersEngine> {
  const { model, cacheDir, onProgress } = opts;
  let path = model;
  let localOnly = false;
  if (model === BUILTIN_MODEL_ID) {
    path = await ensureBuiltinModel(cacheDir, model, onProgress);
    localOnly = true;
  } else if (isLocalPath(model)) {
    path = resolve(model);
    localOnly = true;
  }
  const candidates: ("cpu" | "webgpu")[] = opts.device === "auto" ? ["webgpu", "cpu"] : [opts.device];
  let lastErr: unknown;
  for (const device of candidates) {
    let engine: TransformersEngine | undefined;
    try {
      const { lm, tokenizer } = await loadOn(device, path, localOnly, cacheDir, onProgress, opts.threads);
      engine = new TransformersEngine(model, device, lm, tokenizer);
      // Warm-up: surfaces a device that loads but cannot run, and keeps first-request latency down.
      await engine.generate({
        input: { prompt: "Hello", prompt_type: 1 },
        params: { max_tokens: 2, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], seed: 0 },
      });
      onProgress?.({ status: "ready", progress: 100 });
      return engine;
    } catch (err) {
      lastErr = err;
      await engine?.dispose().catch(() => {});
    }
  }
  throw lastErr;
}

/** The zero-cost bench engine for its own model id (options.ts `--test-engine`), else transformers.js. */
export const loadEngine = async (opts: LoadEngineOptions): Promise<Engine> =>
  opts.model === ZERO_COST_MODEL ? new ZeroCostEngine() : loadTransformersEngine(opts);
