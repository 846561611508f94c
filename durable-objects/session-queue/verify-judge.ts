import type { SessionMinerMessage } from "../../shared/protocol.ts";
import type { Replica } from "./task.ts";

// What one validator's `verification` says of a replica (verify-round.ts), and the spot-check positions. The
// router checks what it can itself: the text the token ids decode to must hash to the replica's revealed result
// hash, and the prompt's token count must be the usage it claimed.

type Verification = Extract<SessionMinerMessage, { type: "verification" }>;

/** Failing positions a verdict lists (the count covers them all). */
const LISTED = 16;

export interface Judged {
  ok: boolean;
  /** The first failing positions (completion-token index; -1: the text or the usage, not a position). */
  positions: number[];
  count: number;
  reason: string;
  checked: number;
  nearTies: number;
  minMargin: number | null;
}

/** One validator's verdict on the replica; null when it checked fewer positions than asked (not counted). */
export function judgeAnswer(r: Replica, msg: Verification, positions?: readonly number[]): Judged | null {
  // A private task's ids are sealed: the count its replica claimed (the validator checked they match).
  const want = positions ? positions.length : (r.token_ids?.length ?? r.usage?.completion_tokens ?? 0);
  if (msg.checked < want) return null;
  const base = { checked: msg.checked, nearTies: msg.near_ties, minMargin: msg.min_margin };
  const faults: string[] = [];
  const at = msg.failures.map((f) => f.pos);
  if (msg.failed > 0) {
    const listed = msg.failures
      .slice(0, 4)
      .map((f) =>
        f.pos === -1
          ? f.token < 0
            ? "-1 (sealed token ids that do not open with the task key)"
            : `-1 (${f.token} token ids for ${f.expected} completion tokens claimed)`
          : f.expected >= 0
            ? `${f.pos} (${f.token}, expected ${f.expected})`
            : `${f.pos} (generation had to end there)`,
      );
    faults.push(
      `${msg.failed} of ${msg.checked} checked tokens differ from what the seeded sampler selects: positions ${listed.join(", ")}`,
    );
  }
  if (msg.text_hash !== r.hash) {
    faults.push("its text is not what its token ids decode to");
    at.push(-1);
  }
  if (r.usage && msg.prompt_tokens !== r.usage.prompt_tokens) {
    faults.push(`usage claims ${r.usage.prompt_tokens} prompt tokens; the prompt is ${msg.prompt_tokens}`);
    at.push(-1);
  }
  const count = msg.failed + (at.length - msg.failures.length);
  return { ...base, ok: faults.length === 0, positions: [...new Set(at)].slice(0, LISTED), count, reason: faults.join("; ") };
}

/** `fraction` of the n completion positions (at least one), drawn uniformly with the router's randomness. */
export function spotPositions(n: number, fraction: number): number[] {
  const s = Math.min(n, Math.max(1, Math.ceil(fraction * n)));
  const all = Array.from({ length: n }, (_, i) => i);
  const rand = new Uint32Array(s);
  crypto.getRandomValues(rand);
  // A partial Fisher–Yates shuffle: the first s entries are a uniform sample without replacement.
  for (let i = 0; i < s; i++) {
    const j = i + (rand[i] % (n - i));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, s).sort((a, b) => a - b);
}

/**
 * The probability that checking `checked` of `n` positions, drawn uniformly, catches a completion with `wrong`
 * wrong tokens: 1 − C(n − wrong, checked) / C(n, checked). With one wrong token it is checked / n.
 */
export function spotDetection(n: number, checked: number, wrong = 1): number {
  if (n === 0 || checked >= n) return 1;
  let miss = 1;
  for (let i = 0; i < wrong; i++) miss *= Math.max(0, n - checked - i) / (n - i);
  return Math.round((1 - miss) * 1e4) / 1e4;
}
