import { randomBytes, randomInt } from "node:crypto";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { type AssignMessage, MAX_RESULT_TEXT, type SessionMinerMessage, TEXT_BYTES_PER_TOKEN } from "../../shared/protocol.ts";
import { type CopyContext, copyTask } from "./dishonest-copy.ts";
import { junkEmbeddings, lyingValidator, OwnOutputs, recordCommits } from "./dishonest-validator.ts";
import { junkTokenIds, lookAlikeOf } from "./dishonest-verify.ts";
import type { Engine, GenerateRequest, GenerateResult } from "./engine-types.ts";
import type { Logger } from "./log.ts";
import type { DishonestMode } from "./options.ts";
import { type PrecommitSigner, TaskRunner, type TaskRunnerApi, type TaskRunnerOptions, type TaskSink } from "./task-runner.ts";
import type { ValidatorApi } from "./validator.ts";

// TEST ONLY. Dishonest and slow miners for the fault and cheat suite: `--test-dishonest <mode>` (env
// MINER_TEST_DISHONEST) makes a real miner process lie in one precise way, `--test-delay-ms <ms>` (env
// MINER_TEST_DELAY_MS) holds each result before it is precommitted, so integration tests and
// `npm run bench:cheats` can check the router catches it. The production TaskRunner knows nothing of this:
// `createTestRunner` builds one from decorated seams (its engine, its precommit signer, its log) and stands
// in front of it to decorate each task's sink or to stop a task after its ack. cli.ts imports this file only
// when one of those options is given; an honest miner never loads it.
//
//   junk              skips the model and answers random text, correctly precommitted and signed
//   wrong-model       serves a different model (the builtin one built with another seed) under the declared id
//   bad-commit        computes honestly and precommits the true hash, then commits a different text
//   replay-signature  computes honestly but precommits with a signature by another key (not its own)
//   silent-after-ack  acks every task, then never sends anything about it
//   context-refusal   acks every task, then hands it back claiming the prompt does not fit its model's context
//   copy              runs no model: polls every route it can reach (MINER_TEST_COPY_API_KEY) for another
//                     replica's output or commitment and precommits and commits that (dishonest-copy.ts)
//   usage-inflate     computes honestly, then reports 2^53 − 1 prompt and completion tokens
//   oversize          computes honestly, then commits far more text than max_tokens allows (correctly precommitted)
//   lying-validator   answers junk as a replica and, validating its own task, returns embeddings that make its
//                     output look central (dishonest-validator.ts)
//   junk-embeddings   runs its tasks honestly but answers every `embed` (embedding jobs, validation) with random
//                     unit vectors of the true dimension, running no embedding model (dishonest-validator.ts)
//   perturbed-weights serves a perturbed copy of the builtin model (trained weights plus seeded noise) under the
//                     declared id (dishonest-verify.ts)
//   quantized         serves a 4-bit per-row quantized copy of the builtin model under the declared id
// On verified tasks (params.verify) junk commits random token ids, and usage-inflate claims 16 prompt tokens more
// than it read (a huge claim is refused before any validator sees it), so validators have something to catch.

export { DISHONEST_MODES, type DishonestMode, isDishonestMode } from "./options.ts";

/** Folder id (under the model cache) of the builtin model's look-alike that `wrong-model` runs. */
export const WRONG_MODEL_VARIANT_ID = "edge/tiny-gpt2-variant";
/** The variant differs from the builtin model by its weight seed only: same shapes, speed and tokenizer. */
export const WRONG_MODEL_SEED_OFFSET = 1;

/** A test-only miner: the way it cheats (none: honest) and how long it holds each result. */
export interface TestMiner {
  mode?: DishonestMode;
  delayMs?: number;
  /** Only results of tasks asking for at least this many tokens are held (MINER_TEST_DELAY_MIN_TOKENS; default all). */
  delayMinTokens?: number;
  /** copy: the router it reads from and the API key it reads with (MINER_TEST_COPY_API_KEY). */
  routerUrl?: string;
  copyApiKey?: string;
  /** lying-validator: the outputs it committed, shared by its runner (which records them) and its validator. */
  own?: OwnOutputs;
}

/** What cli.ts wires for a test-only miner. */
export interface TestMinerSetup {
  /** wrong-model: the model folder to load instead of the declared model. */
  readonly loadModel?: string;
  /** The loaded engine as the agent should see it (wrong-model: presented under the declared id). */
  engine(loaded: Engine): Engine;
  /** Builds the agent's task runner: a decorated TaskRunner (MinerAgentOptions.createRunner). */
  createRunner(opts: TaskRunnerOptions): TaskRunnerApi;
  /** The agent's validator as it should answer (lying-validator: favouring its own output). */
  validator(honest: ValidatorApi): ValidatorApi;
}

/** Warns that this miner is test-only and, for wrong-model, builds the look-alike model it will load instead. */
export async function prepareTestMiner(test: TestMiner & { model: string; cacheDir: string; log: Logger }): Promise<TestMinerSetup> {
  test.copyApiKey ??= process.env.MINER_TEST_COPY_API_KEY || undefined;
  test.delayMinTokens ??= minTokensFromEnv(process.env.MINER_TEST_DELAY_MIN_TOKENS);
  const { mode, model, cacheDir, log } = test;
  if (mode) log.warn(`TEST-ONLY DISHONEST MODE: ${mode} (this miner cheats on purpose; never use outside tests)`, { dishonest: mode });
  let loadModel: string | undefined;
  // wrong-model, perturbed-weights, quantized: a look-alike of the builtin model, loaded under the declared id.
  const lookAlike = mode === "wrong-model" ? null : mode && lookAlikeOf(mode);
  if (mode === "wrong-model" || lookAlike) {
    const build = await import("./model/build.ts");
    if (model !== build.BUILTIN_MODEL_ID) throw new Error(`--test-dishonest ${mode} needs the builtin model`);
    const { id, variant } = lookAlike || { id: WRONG_MODEL_VARIANT_ID, variant: { seed: build.BUILTIN_SEED + WRONG_MODEL_SEED_OFFSET } };
    loadModel = await build.ensureBuiltinModel(cacheDir, id, undefined, variant);
  }
  const own = new OwnOutputs();
  return {
    loadModel,
    engine: (loaded) => (loadModel ? disguiseEngine(loaded, model) : loaded),
    createRunner: (opts) => createTestRunner(opts, { ...test, own }),
    validator: (honest) =>
      mode === "lying-validator" ? lyingValidator(honest, own, log) : mode === "junk-embeddings" ? junkEmbeddings(honest, log) : honest,
  };
}

/** A TaskRunner that cheats in `mode` and holds each result `delayMs` before precommitting it. */
export function createTestRunner(opts: TaskRunnerOptions, test: TestMiner): TaskRunnerApi {
  return new TestRunner(opts, test);
}

/** How one mode changes the runner; each part is absent where the mode leaves it honest. */
interface Cheat {
  /** Replaces the engine's generation (junk). */
  engine?(honest: TaskRunnerOptions["engine"]): TaskRunnerOptions["engine"];
  /** Signs precommits with another key, still naming the miner's own address (replay-signature). */
  account?(honest: PrecommitSigner): PrecommitSigner;
  /** Rewrites what a task sends (bad-commit). */
  sink?(honest: TaskSink): TaskSink;
  /** Ack, then drop the task on the floor (silent-after-ack). */
  silentAfterAck?: boolean;
  /** Ack, then release the task as too long for the model (context-refusal), whatever its length. */
  refuseContext?: boolean;
  /** Ack, then answer with whatever another replica revealed (copy). */
  copy?: boolean;
}

function cheatFor(mode: DishonestMode, own = new OwnOutputs()): Cheat {
  switch (mode) {
    case "junk":
      return { engine: (honest) => ({ model: honest.model, generate: junkGenerate }) };
    case "bad-commit":
      return { sink: (honest) => rewriteCommits(honest, (c) => (c.result_urn ? c : { ...c, text: swapLastChar(c.text) })) };
    case "replay-signature": {
      // A key that is not the miner's: its signatures recover to another address. (A miner never sees
      // another miner's precommit, so replaying one verbatim is not observable from here; the router's
      // check is the same either way: the signature must recover to the sender's own address.)
      const other = privateKeyToAccount(generatePrivateKey());
      return { account: (honest) => ({ address: honest.address, signTypedData: other.signTypedData.bind(other) }) };
    }
    case "wrong-model":
      // The engine itself is swapped at load (prepareTestMiner, disguiseEngine); the task path stays honest.
      return {};
    case "junk-embeddings":
      // Only its validator cheats (prepareTestMiner); its tasks are honest.
      return {};
    case "perturbed-weights":
    case "quantized":
      // A look-alike model is loaded instead (prepareTestMiner, dishonest-verify.ts); the task path stays honest.
      return {};
    case "silent-after-ack":
      return { silentAfterAck: true };
    case "context-refusal":
      return { refuseContext: true };
    case "copy":
      return { copy: true };
    case "usage-inflate":
      return { sink: (honest) => rewriteCommits(honest, inflateUsage) };
    case "lying-validator":
      // Junk as a replica (so a fair judgement names it), its commits remembered for its validator to favour.
      return { engine: (honest) => ({ model: honest.model, generate: junkGenerate }), sink: (honest) => recordCommits(honest, own) };
    case "oversize":
      return { engine: (honest) => ({ model: honest.model, generate: async (req) => oversize(await honest.generate(req), req) }) };
  }
}

/** The decorator: a TaskRunner built from the cheat's seams, with the cheat's sink and silence in front. */
class TestRunner implements TaskRunnerApi {
  readonly #runner: TaskRunner;
  readonly #cheat: Cheat;
  readonly #log: Logger;
  readonly #copy: CopyContext;
  /** copy: the tasks being copied, stopped on cancel. */
  readonly #copying = new Map<string, AbortController>();

  constructor(opts: TaskRunnerOptions, { mode, delayMs = 0, delayMinTokens = 0, routerUrl = "", copyApiKey, own }: TestMiner) {
    this.#cheat = mode ? cheatFor(mode, own) : {};
    this.#log = opts.log;
    this.#copy = { routerUrl, apiKey: copyApiKey, account: opts.account, domain: opts.domain, log: opts.log };
    this.#runner = new TaskRunner({
      ...opts,
      engine: holdResults(this.#cheat.engine?.(opts.engine) ?? opts.engine, delayMs, delayMinTokens),
      account: this.#cheat.account?.(opts.account) ?? opts.account,
      log: mode ? tagTaskDone(opts.log, mode) : opts.log,
    });
  }

  get running(): number {
    return this.#runner.running;
  }

  get queued(): number {
    return this.#runner.queued;
  }

  get inflight(): number {
    return this.#runner.inflight;
  }

  submit(sink: TaskSink, assign: AssignMessage): void {
    const { silentAfterAck, refuseContext, copy } = this.#cheat;
    if (copy) return this.#copyTask(sink, assign);
    if (!silentAfterAck && !refuseContext) {
      this.#runner.submit(this.#cheat.sink?.(sink) ?? sink, assign);
      return;
    }
    if (!this.#runner.admit(sink, assign)) return;
    const mode = silentAfterAck ? "silent-after-ack" : "context-refusal";
    if (refuseContext) {
      const reason = "engine error: prompt is 100000 tokens; the model's context is 512";
      sink.deliver({ type: "release", task_id: assign.task_id, reason, code: "context_length_exceeded" });
    }
    const f = { session_id: sink.sessionId, task_id: assign.task_id, mode };
    const what = silentAfterAck ? "acked and going silent" : "acked and refused it as too long";
    this.#log.event("dishonest", `task ${sink.sessionId}/${assign.task_id}: ${what} (test-only dishonest mode)`, f, "warn");
  }

  /** copy: ack, then answer with what another replica revealed (dishonest-copy.ts). */
  #copyTask(sink: TaskSink, assign: AssignMessage): void {
    if (!this.#runner.admit(sink, assign)) return;
    const key = `${sink.sessionId}/${assign.task_id}`;
    const stop = new AbortController();
    this.#copying.set(key, stop);
    void copyTask(this.#copy, sink, assign, stop.signal)
      .catch((err) => this.#log.warn(`task ${key}: copy failed: ${String(err)}`))
      .finally(() => this.#copying.delete(key));
  }

  cancel(sessionId: string, taskId: string, reason: string): void {
    this.#copying.get(`${sessionId}/${taskId}`)?.abort();
    this.#runner.cancel(sessionId, taskId, reason);
  }

  abortSession(sessionId: string): void {
    this.#runner.abortSession(sessionId);
  }

  stopAccepting(): void {
    this.#runner.stopAccepting();
  }

  releaseRunning(): void {
    this.#runner.releaseRunning();
  }
}

/**
 * `--test-delay-ms`: each result (of a task asking for at least `minTokens` tokens) is held this long before the
 * runner precommits it (a slow miner). The threshold lets one test miner be slow for a file's cancel tests and
 * quick for its many short completions.
 */
function holdResults(engine: TaskRunnerOptions["engine"], ms: number, minTokens: number): TaskRunnerOptions["engine"] {
  if (!ms) return engine;
  return {
    model: engine.model,
    generate: async (req) => {
      const result = await engine.generate(req);
      // A stopped task is dropped by the runner at once; only a result about to be precommitted is held.
      if (!req.signal?.aborted && req.params.max_tokens >= minTokens) await new Promise((r) => setTimeout(r, ms));
      return result;
    },
  };
}

/** MINER_TEST_DELAY_MIN_TOKENS: a whole number of tokens, or unset (every result is held). */
function minTokensFromEnv(raw: string | undefined): number {
  if (!raw) return 0;
  if (!/^\d+$/.test(raw)) throw new Error(`MINER_TEST_DELAY_MIN_TOKENS: expected a whole number of tokens, got ${raw}`);
  return Number(raw);
}

/** Every `task_done` event of a cheating runner names its mode. */
function tagTaskDone(log: Logger, mode: DishonestMode): Logger {
  return {
    info: (msg, fields) => log.info(msg, fields),
    notice: (msg, fields) => log.notice(msg, fields),
    warn: (msg, fields) => log.warn(msg, fields),
    error: (msg, fields) => log.error(msg, fields),
    event: (event, msg, fields, level) => log.event(event, msg, event === "task_done" ? { ...fields, dishonest: mode } : fields, level),
  };
}

/** Same length, different bytes: a swap a careless check (length, prefix) would not notice. */
function swapLastChar(text: string): string {
  return text.length > 0 ? text.slice(0, -1) + (text.endsWith("x") ? "y" : "x") : "x";
}

type Commit = Extract<SessionMinerMessage, { type: "commit" }>;

/** usage-inflate: what it claims for every count. */
const HUGE = Number.MAX_SAFE_INTEGER;

/** usage-inflate: 2^53 − 1 of everything; on a verified task (it carries token ids) 16 prompt tokens more. */
function inflateUsage(c: Commit): Commit {
  if (c.token_ids) return { ...c, usage: { ...c.usage, prompt_tokens: c.usage.prompt_tokens + 16 } };
  return { ...c, usage: { prompt_tokens: HUGE, completion_tokens: HUGE } };
}

/** oversize: the honest text, then padding to 100 × what max_tokens allows (within the protocol's frame bound). */
function oversize(result: GenerateResult, req: GenerateRequest): GenerateResult {
  const target = Math.min(100 * req.params.max_tokens * TEXT_BYTES_PER_TOKEN, MAX_RESULT_TEXT);
  return { ...result, text: (result.text + " pad".repeat(Math.ceil(target / 4))).slice(0, target) };
}

/** The sink with every commit rewritten. */
function rewriteCommits(sink: TaskSink, rewrite: (commit: Commit) => Commit): TaskSink {
  return {
    get sessionId() {
      return sink.sessionId;
    },
    send: (msg) => sink.send(msg),
    deliver: (msg) => sink.deliver(msg.type === "commit" ? rewrite(msg) : msg),
    hasPending: (taskId) => sink.hasPending(taskId),
    dropTask: (taskId) => sink.dropTask(taskId),
  };
}

const WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "quux", "zorp", "blarg", "fnord", "wibble", "plugh", "xyzzy"];

/** Random words, one per requested token, without running the model: what a lazy miner would send. */
async function junkGenerate(req: GenerateRequest): Promise<GenerateResult> {
  const n = req.params.max_tokens;
  let text = "";
  for (let i = 0; i < n; i++) {
    const piece = ` ${WORDS[randomInt(WORDS.length)]}${randomBytes(1)[0]! % 10}`;
    text += piece;
    req.onToken?.(piece);
  }
  const usage = { prompt_tokens: Math.max(1, Math.ceil(req.input.prompt.length / 4)), completion_tokens: n };
  return junkTokenIds({ text, finish_reason: "length", usage, inference_ms: 0 }, !!req.params.verify);
}

/** Presents an engine running some other model as the declared one (wrong-model). */
export function disguiseEngine(engine: Engine, declaredModel: string): Engine {
  return {
    model: declaredModel,
    device: engine.device,
    ...(engine.context ? { context: engine.context } : {}),
    generate: (req) => engine.generate(req),
    dispose: () => engine.dispose(),
  };
}
