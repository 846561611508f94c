import { random } from "@huggingface/transformers";
import type { GenerationParams } from "../../shared/generation.ts";
import type { VerifyFailure } from "../../shared/protocol.ts";
import { resultHash } from "../../shared/signing.ts";
import type { Rescored } from "./engine.ts";
import { applyPenalties, type Candidates, candidates, drawFrom, NEGLIGIBLE } from "./model/sampling.ts";
import { IncrementalDetokenizer, StopMatcher } from "./model/text-stream.ts";

// Verified sampling, the validator's side: one teacher-forced forward pass over prompt + a replica's completion
// gives the logits at every position; the task's decoding policy (model/sampling.ts: penalties, temperature,
// top-k, top-p, one uniform draw per step from the task's seeded stream) is re-run from them and each checked
// token compared with the committed one. The stream is replayed in full (draw i belongs to position i), so a
// spot check of a few positions costs the same forward pass but only those comparisons.
//
// Generation ran with a KV cache, this pass without one, and another device may sum in another order: logits
// differ in the last float bits (the built-in model on one CPU: at most 5.2e-4 logit units over 14,400 positions).
// A token that differs from the recomputed choice is accepted only when the choice sits on a boundary within that
// noise (a near tie): its seeded draw within SAMPLE_TOLERANCE (share of the kept probability mass) of the
// committed token's interval (widened to the block of candidates whose logits are within ORDER_TOLERANCE of its own,
// which may have sorted either way), or (greedy) its logit within LOGIT_TOLERANCE of the best. What a cheater gains
// from the slack is a neighbouring, equally likely token at a near tie, at ~0.2 % of positions.

/** How far (share of the kept probability mass) a draw may lie outside the committed token's interval. */
export const SAMPLE_TOLERANCE = 1e-3;
/** How far below the best logit (after penalties) a greedy token may be (10× the drift measured on one CPU). */
export const LOGIT_TOLERANCE = 5e-3;
/** Candidates this close in logit may sort in either order between generation and the check (4× the drift). */
export const ORDER_TOLERANCE = 2e-3;
/** Failures a verdict lists (the count covers them all). */
const MAX_LISTED = 64;

type Policy = Pick<
  GenerationParams,
  "temperature" | "top_p" | "top_k" | "presence_penalty" | "frequency_penalty" | "seed" | "stop" | "max_tokens"
>;

/** One position's check: whether it passes, how far its decision was from the boundary, whether it was a near tie. */
interface Step {
  ok: boolean;
  expected: number;
  margin: number;
  nearTie: boolean;
}

export interface Check {
  /** Hash of the text the token ids decode to, stops applied (what the replica must have committed). */
  text_hash: `0x${string}`;
  prompt_tokens: number;
  checked: number;
  failures: VerifyFailure[];
  failed: number;
  near_ties: number;
  min_margin: number | null;
}

/** Greedy: the committed token must be the argmax (ties by the lowest id, as transformers.js picks), or within LOGIT_TOLERANCE of it. */
function greedyStep(row: Float32Array, token: number): Step {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  const gap = row[best] - (row[token] ?? -Infinity);
  if (token === best) {
    let second = -Infinity;
    for (let i = 0; i < row.length; i++) if (i !== best && row[i] > second) second = row[i];
    return { ok: true, expected: best, margin: row[best] - second, nearTie: false };
  }
  return { ok: gap <= LOGIT_TOLERANCE, expected: best, margin: -gap, nearTie: gap <= LOGIT_TOLERANCE };
}

/** The committed token's interval [lo, hi) of the first `keep` candidates' mass. */
function interval(c: Candidates, j: number): [number, number] {
  let lo = 0;
  for (let i = 0; i < j; i++) lo += c.probs[i];
  return [lo, lo + c.probs[j]];
}

/**
 * The common case without a sort: with neither top-k nor top-p, the committed token's interval is the weight of the
 * candidates ranked before it (higher logit, or equal and a lower id) and its own, and the draw either lands in it
 * (the token is the expected one) or the sorted path below decides. Summed in another order than generation's
 * sorted sum: the boundaries agree to ~1e-15, far inside SAMPLE_TOLERANCE.
 */
function unsortedStep(row: Float32Array, token: number, u: number, p: Policy): Step | null {
  if (p.top_k > 0 || p.top_p < 1) return null;
  let max = -Infinity;
  for (const x of row) if (x > max) max = x;
  const floor = max - NEGLIGIBLE * p.temperature;
  const lt = row[token];
  if (!(lt >= floor)) return null;
  let before = 0;
  let total = 0;
  for (let i = 0; i < row.length; i++) {
    const x = row[i];
    if (!(x >= floor)) continue;
    const w = Math.exp((x - max) / p.temperature);
    total += w;
    if (x > lt || (x === lt && i < token)) before += w;
  }
  const r = u * total;
  const hi = before + Math.exp((lt - max) / p.temperature);
  return r >= before && r < hi ? { ok: true, expected: token, margin: Math.min(r - before, hi - r) / total, nearTie: false } : null;
}

/** Sampled: the committed token must be the one the seeded draw `u` selects, up to SAMPLE_TOLERANCE at a boundary. */
function sampledStep(row: Float32Array, token: number, u: number, p: Policy): Step {
  const quick = unsortedStep(row, token, u, p);
  if (quick) return quick;
  const c = candidates(row, p);
  const expected = drawFrom(c, u);
  const j = c.cand.indexOf(token);
  if (j < 0) return { ok: false, expected, margin: -1, nearTie: false };
  // Cut by top-p: how far past the top_p share its preceding mass was (top-k cuts are exact ranks: not tolerated).
  let cut = 0;
  if (j >= c.keep) {
    if (p.top_k > 0 && j >= p.top_k) return { ok: false, expected, margin: -1, nearTie: false };
    cut = interval(c, j)[0] / c.total - p.top_p;
  }
  const keep = Math.max(c.keep, j + 1);
  const mass = keep === c.keep ? c.mass : c.probs.slice(0, keep).reduce((a, b) => a + b, 0);
  const r = u * mass;
  if (expected === token) {
    const [lo, hi] = interval(c, j);
    return { ok: true, expected, margin: Math.min(r - lo, hi - r) / mass, nearTie: false };
  }
  // Candidates whose logits are within ORDER_TOLERANCE of the token's may have sorted either way in generation:
  // the token could have held any interval inside their block.
  const near = (i: number) => Math.abs(row[c.cand[i]] - row[token]) <= ORDER_TOLERANCE;
  let first = j;
  let last = j;
  while (first > 0 && near(first - 1)) first--;
  while (last + 1 < c.cand.length && near(last + 1)) last++;
  const lo = interval(c, first)[0];
  const hi = interval(c, last)[1];
  const off = Math.max(cut, 0) + Math.max(lo - r, r - hi, 0) / mass;
  return { ok: off <= SAMPLE_TOLERANCE, expected, margin: -off, nearTie: off <= SAMPLE_TOLERANCE };
}

/** Replays the engine's stop handling over the committed ids: the text they give and where generation had to end. */
function replayText(
  ids: readonly number[],
  r: Rescored,
  p: Policy,
  finish: "stop" | "length",
): { text: string; fault: VerifyFailure | null } {
  const detok = new IncrementalDetokenizer(r.decode, r.promptIds);
  const stops = new StopMatcher(p.stop);
  const eos = new Set(r.eos);
  const room = Math.min(p.max_tokens, r.context - r.promptIds.length);
  let ended = false;
  for (let i = 0; i < ids.length; i++) {
    if (ended || stops.stopped) return { text: "", fault: { pos: i, token: ids[i], expected: -1, margin: 0 } };
    if (eos.has(ids[i])) ended = true;
    else stops.push(detok.push(ids[i]));
  }
  if (!stops.stopped) stops.push(detok.flush());
  stops.finish();
  const stopped = ended || stops.stopped;
  // Ended early (neither a stop, an end-of-sequence token nor max_tokens) or claimed a finish it did not reach.
  if ((!stopped && ids.length < room) || (stopped ? "stop" : "length") !== finish) {
    return { text: stops.result, fault: { pos: ids.length, token: -1, expected: -1, margin: 0 } };
  }
  return { text: stops.result, fault: null };
}

/**
 * Checks a completion against the logits of a teacher-forced pass: every position in `positions` (all when
 * absent). The seeded stream is drawn once per position in order, exactly as generation drew it.
 */
export function checkCompletion(
  r: Rescored,
  ids: readonly number[],
  p: Policy,
  finish: "stop" | "length",
  positions?: readonly number[],
): Check {
  const wanted = positions ? new Set(positions.filter((x) => x < ids.length)) : null;
  const rng = p.temperature > 0 ? new random.Random(p.seed) : null;
  const counts = new Map<number, number>();
  const failures: VerifyFailure[] = [];
  let failed = 0;
  let nearTies = 0;
  let checked = 0;
  let minMargin: number | null = null;
  for (let i = 0; i < ids.length; i++) {
    const u = rng ? rng.random() : 0; // drawn at every step, checked or not: draw i belongs to position i
    if (!wanted || wanted.has(i)) {
      const row = r.logits.slice(i * r.vocab, (i + 1) * r.vocab);
      applyPenalties(row, counts, p);
      const s = rng ? sampledStep(row, ids[i], u, p) : greedyStep(row, ids[i]);
      checked++;
      if (s.nearTie) nearTies++;
      if (s.ok && !s.nearTie) minMargin = minMargin === null ? s.margin : Math.min(minMargin, s.margin);
      if (!s.ok) {
        failed++;
        if (failures.length < MAX_LISTED) failures.push({ pos: i, token: ids[i], expected: s.expected, margin: s.margin });
      }
    }
    counts.set(ids[i], (counts.get(ids[i]) ?? 0) + 1);
  }
  const { text, fault } = replayText(ids, r, p, finish);
  if (fault) {
    failed++;
    if (failures.length < MAX_LISTED) failures.push(fault);
  }
  return {
    text_hash: resultHash(text),
    prompt_tokens: r.promptIds.length,
    checked,
    failures,
    failed,
    near_ties: nearTies,
    min_margin: minMargin,
  };
}

/**
 * A private task's ids came sealed, so the router could not count them: the validator checks they are as many as
 * the completion tokens the replica claimed (a failure at -1, as the router reports its own checks).
 */
export function countFault(c: Check, ids: readonly number[], claimed: number | undefined): Check {
  if (claimed === undefined || claimed === ids.length) return c;
  const failures = [...c.failures, { pos: -1, token: ids.length, expected: claimed, margin: 0 }].slice(0, MAX_LISTED);
  return { ...c, failed: c.failed + 1, failures };
}
