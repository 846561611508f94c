import type { EmbedMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import type { Embedder, EmbedderOptions } from "./embedder.ts";
import type { Logger } from "./log.ts";

// Validation work for similarity consensus: the router sends a task's redundant outputs and this miner
// returns their embeddings. The embedding model loads on the first request (a miner that is never asked
// pays nothing), then stays loaded.

export interface ValidatorOptions extends EmbedderOptions {
  log: Logger;
  /** Injected for tests; defaults to transformers.js feature extraction. */
  load?: (opts: EmbedderOptions) => Promise<Embedder>;
}

/** A validator as the agent's session channels use it: a Validator, or (test-only) something put in front of one. */
export type ValidatorApi = Pick<Validator, "model" | "handle" | "dispose">;

export class Validator {
  readonly model: string;
  readonly #opts: ValidatorOptions;
  #embedder: Promise<Embedder> | null = null;

  constructor(opts: ValidatorOptions) {
    this.#opts = opts;
    this.model = opts.model;
  }

  async handle(msg: EmbedMessage): Promise<SessionMinerMessage> {
    const { log } = this.#opts;
    if (msg.model !== this.model) {
      return { type: "embed_failed", task_id: msg.task_id, reason: `this miner validates with ${this.model}, not ${msg.model}` };
    }
    const t0 = performance.now();
    try {
      this.#embedder ??= this.#load();
      const vectors = await (await this.#embedder).embed(msg.texts);
      const ms = Math.round(performance.now() - t0);
      log.event("validation_done", `validated task ${msg.task_id}: embedded ${msg.texts.length} outputs in ${ms} ms`, {
        task_id: msg.task_id,
        texts: msg.texts.length,
        ms,
      });
      return { type: "embeddings", task_id: msg.task_id, model: this.model, vectors };
    } catch (err) {
      this.#embedder = null; // try loading again next time
      log.warn(`validation of task ${msg.task_id} failed: ${String(err)}`);
      return { type: "embed_failed", task_id: msg.task_id, reason: String(err).slice(0, 500) };
    }
  }

  async dispose(): Promise<void> {
    const e = this.#embedder;
    this.#embedder = null;
    if (e) await (await e.catch(() => null))?.dispose();
  }

  #load(): Promise<Embedder> {
    const { log, load, ...opts } = this.#opts;
    log.info(`loading embedding model ${opts.model} for validation work`);
    return (load ?? defaultLoad)(opts);
  }
}

async function defaultLoad(opts: EmbedderOptions): Promise<Embedder> {
  const { loadEmbedder } = await import("./embedder.ts");
  return loadEmbedder(opts);
}
