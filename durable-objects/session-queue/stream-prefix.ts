import { utf8Bytes } from "./miner-input.ts";

// What a streaming client may be sent: only text a quorum of live replicas has produced. Greedy replicas agree
// token by token, so the client sees the consensus as fast as the quorum's slowest member, never a lone fast
// liar's text. With k = 1 that is the one replica; a replacement resumes after the text already sent.
//
// This stream is optimistic with respect to the commit-reveal barrier (barrier.ts): it goes to the submitting
// client's own request only, as the tokens come, before every replica has precommitted. No miner, no other key
// and no API route ever sees it (the task view stays sealed until the task is finished), so it opens no copy
// route; a client that forwards its own stream to a miner of its own task only spoils the redundancy it pays
// for (README, "Commit-reveal barrier"). A replica's streamed text is bounded like its commit and is not kept
// at all when nobody streams.

/** Length of the common prefix of a and b, given they agree on the first `from` characters. */
export function commonPrefix(a: string, b: string, from: number): number {
  const n = Math.min(a.length, b.length);
  let i = from;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/**
 * The longest text, extending `sent`, that at least `quorum` of the replicas' streams share; null when no more
 * than `sent` is confirmed. Streams that diverged from what was already sent are ignored.
 */
export function confirmedPrefix(streams: readonly string[], sent: string, quorum: number): string | null {
  const from = sent.length;
  const texts = streams.filter((t) => t.length > from && t.startsWith(sent));
  let confirmed = from;
  let best = "";
  for (const t of texts) {
    // The longest prefix of t that at least `quorum` texts (t included) share.
    const shared = texts.map((u) => commonPrefix(t, u, from)).sort((a, b) => b - a);
    if (shared.length >= quorum && shared[quorum - 1] > confirmed) [confirmed, best] = [shared[quorum - 1], t];
  }
  return confirmed > from ? best.slice(0, confirmed) : null;
}

/**
 * Adds a streamed piece to a replica's text unless that takes it past `cap` UTF-8 bytes (the commit bound,
 * miner-input.ts): false then, and nothing is kept.
 */
export function extendStream(r: { streamed: string; streamedBytes?: number }, piece: string, cap: number): boolean {
  const bytes = (r.streamedBytes ?? 0) + utf8Bytes(piece);
  if (bytes > cap) return false;
  r.streamed += piece;
  r.streamedBytes = bytes;
  return true;
}
