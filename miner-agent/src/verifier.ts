import type { AssignMessage, SessionMinerMessage, VerifyMessage } from "../../shared/protocol.ts";
import { resultHash } from "../../shared/signing.ts";
import type { Rescored } from "./engine.ts";
import type { Logger } from "./log.ts";
import { type PayloadClient, PayloadError } from "./payloads.ts";

// Verified sampling, the validator's side (the checks themselves: verifier-check.ts, loaded on the first `verify`
// so the agent starts without transformers.js): the router sends a replica's completion as token ids; this miner
// re-scores prompt + completion in one forward pass of its own model and reports what the seeded sampler would
// have chosen at each position asked.

/** What a validator needs of its engine: the teacher-forced pass (TransformersEngine.rescore). */
export interface Rescorer {
  readonly model: string;
  rescore(input: VerifyMessage["input"], ids: readonly number[]): Promise<Rescored>;
}

export interface VerifierOptions {
  engine: Rescorer;
  log: Logger;
  /** Off-chain prompts: fetched like a replica's (the router lets an asked validator read it). */
  fetchInput?: (msg: VerifyMessage) => Promise<VerifyMessage["input"]>;
  /** Private tasks: the sealed token ids opened with the task key (only allowlisted miners get it). */
  openIds?: (msg: VerifyMessage) => Promise<number[]>;
}

/** Answers `verify`: re-scores the completion with this miner's model and reports what it found. */
export async function verify(msg: VerifyMessage, opts: VerifierOptions): Promise<SessionMinerMessage> {
  const { engine, log } = opts;
  const fail = (reason: string): SessionMinerMessage => ({ type: "verify_failed", task_id: msg.task_id, reason: reason.slice(0, 500) });
  if (msg.model !== engine.model) return fail(`this miner serves ${engine.model}, not ${msg.model}`);
  if (msg.params.constraint) return fail("constrained decoding is not verified");
  const t0 = performance.now();
  try {
    const input = msg.payload?.prompt_urn ? await opts.fetchInput!(msg) : msg.input;
    const ids = msg.token_ids ?? (msg.token_ids_sealed ? await opts.openIds!(msg).catch(unopened) : null);
    if (ids === "unopened") return await unopenable(msg, input, engine);
    if (!ids) return fail("the verify message carries no token ids");
    // A spot check needs the logits up to its last position only: the pass stops there (the ids after it are
    // still decoded for the text check, which needs no logits).
    const upTo = msg.positions?.length ? Math.min(ids.length, Math.max(...msg.positions) + 1) : ids.length;
    const rescored = await engine.rescore(input, ids.slice(0, upTo));
    const { checkCompletion, countFault } = await import("./verifier-check.ts");
    const c = countFault(checkCompletion(rescored, ids, msg.params, msg.finish_reason, msg.positions), ids, msg.completion_tokens);
    const ms = Math.round(performance.now() - t0);
    log.event("verification_done", `verified task ${msg.task_id}: ${c.checked} positions, ${c.failed} failed, in ${ms} ms`, {
      session_id: msg.session_id,
      task_id: msg.task_id,
      checked: c.checked,
      failed: c.failed,
      near_ties: c.near_ties,
      rescored: upTo,
      ms,
    });
    return { type: "verification", task_id: msg.task_id, ...c };
  } catch (err) {
    log.warn(`verification of task ${msg.task_id} failed: ${String(err)}`);
    return fail(String(err));
  }
}

/** Sealed ids that do not open with the task key (the key itself was had): the replica's fault, not the validator's. */
const unopened = (err: unknown): "unopened" => {
  if (err instanceof PayloadError && err.code === "bad_sealed_ids") return "unopened";
  throw err;
};

/**
 * The verdict on sealed ids that do not open: every asked position fails (at -1, as the router's own checks do), and
 * the text hash of nothing, so a cheater cannot make its private output unverifiable by sealing garbage.
 */
async function unopenable(msg: VerifyMessage, input: VerifyMessage["input"], engine: Rescorer): Promise<SessionMinerMessage> {
  const { promptIds } = await engine.rescore(input, [0]); // the prompt's token count, which the router compares
  return {
    type: "verification",
    task_id: msg.task_id,
    text_hash: resultHash(""),
    prompt_tokens: promptIds.length,
    checked: msg.positions?.length ?? msg.completion_tokens ?? 0,
    failed: 1,
    failures: [{ pos: -1, token: -1, expected: -1, margin: 0 }],
    near_ties: 0,
    min_margin: null,
  };
}

/** A session channel's answer to `verify` (agent.ts wires one per miner whose engine can re-score). */
export type VerifyHandler = (msg: VerifyMessage) => Promise<SessionMinerMessage>;

/** The handler for this miner's engine; none when it cannot re-score (another engine, a disguised one). */
export function verifierFor(
  engine: Partial<Rescorer> & { model: string },
  payloads: Pick<PayloadClient, "input" | "openTokenIds">,
  log: Logger,
): VerifyHandler | undefined {
  if (typeof engine.rescore !== "function") return undefined;
  const rescorer: Rescorer = { model: engine.model, rescore: engine.rescore.bind(engine) };
  // The validator reads an off-chain prompt as a replica does: the router lets an asked validator fetch it.
  const fetchInput = (m: VerifyMessage) => payloads.input(m.session_id, m as unknown as AssignMessage);
  const openIds = (m: VerifyMessage) => payloads.openTokenIds(m.session_id, m.task_id, m.payload!, m.token_ids_sealed!);
  return (msg) => verify(msg, { engine: rescorer, log, fetchInput, openIds });
}
