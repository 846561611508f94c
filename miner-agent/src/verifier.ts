import type { AssignMessage, SessionMinerMessage, VerifyMessage } from "../../shared/protocol.ts";
import type { Rescored } from "./engine.ts";
import type { Logger } from "./log.ts";

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
    const rescored = await engine.rescore(input, msg.token_ids);
    const { checkCompletion } = await import("./verifier-check.ts");
    const c = checkCompletion(rescored, msg.token_ids, msg.params, msg.finish_reason, msg.positions);
    const ms = Math.round(performance.now() - t0);
    log.event("verification_done", `verified task ${msg.task_id}: ${c.checked} positions, ${c.failed} failed, in ${ms} ms`, {
      task_id: msg.task_id,
      checked: c.checked,
      failed: c.failed,
      near_ties: c.near_ties,
      ms,
    });
    return { type: "verification", task_id: msg.task_id, ...c };
  } catch (err) {
    log.warn(`verification of task ${msg.task_id} failed: ${String(err)}`);
    return fail(String(err));
  }
}

/** A session channel's answer to `verify` (agent.ts wires one per miner whose engine can re-score). */
export type VerifyHandler = (msg: VerifyMessage) => Promise<SessionMinerMessage>;

/** The handler for this miner's engine; none when it cannot re-score (another engine, a disguised one). */
export function verifierFor(
  engine: Partial<Rescorer> & { model: string },
  payloads: { input(sessionId: string, assign: AssignMessage): Promise<AssignMessage["input"]> },
  log: Logger,
): VerifyHandler | undefined {
  if (typeof engine.rescore !== "function") return undefined;
  const rescorer: Rescorer = { model: engine.model, rescore: engine.rescore.bind(engine) };
  // The validator reads an off-chain prompt as a replica does: the router lets an asked validator fetch it.
  const fetchInput = (m: VerifyMessage) => payloads.input(m.session_id, m as unknown as AssignMessage);
  return (msg) => verify(msg, { engine: rescorer, log, fetchInput });
}
