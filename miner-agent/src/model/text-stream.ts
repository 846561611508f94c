// Turns generated token ids into streamed text pieces whose concatenation is the final text.

export type DecodeFn = (ids: number[]) => string;

/**
 * Incremental detokenizer (the prefix/read-offset scheme of Hugging Face TGI). Each step decodes
 * only a short window and emits the text that the newest tokens added. The window starts a few
 * tokens back (into the prompt at first) so tokenizers that drop a leading space when decoding on
 * their own (SentencePiece) still produce it; pieces that end in an incomplete UTF-8 sequence
 * (U+FFFD) are held back until the next token completes them.
 */
export class IncrementalDetokenizer {
  private readonly ids: number[];
  private prefix: number;
  private read: number;
  private readonly decode: DecodeFn;

  constructor(decode: DecodeFn, promptIds: number[]) {
    this.decode = decode;
    this.ids = promptIds.slice(-6);
    this.prefix = 0;
    this.read = this.ids.length;
  }

  private text(from: number, to: number): string {
    return to > from ? this.decode(this.ids.slice(from, to)) : "";
  }

  push(id: number): string {
    this.ids.push(id);
    const before = this.text(this.prefix, this.read);
    const after = this.text(this.prefix, this.ids.length);
    if (after.length <= before.length || after.endsWith("\uFFFD")) return "";
    this.prefix = this.read;
    this.read = this.ids.length;
    return after.slice(before.length);
  }

  /** Whatever is still held back (e.g. a trailing invalid byte sequence) once decoding ends. */
  flush(): string {
    const before = this.text(this.prefix, this.read);
    const after = this.text(this.prefix, this.ids.length);
    this.prefix = this.read = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : "";
  }
}

/**
 * Applies stop strings to streamed text. Text that could be the start of a stop string is held
 * back until it is known not to be, so no part of a stop string is ever emitted; on a match the
 * text is cut just before it.
 */
export class StopMatcher {
  private text = "";
  private emitted = 0;
  private readonly stops: string[];
  stopped = false;

  constructor(stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Adds decoded text; returns the part that is now safe to emit. */
  push(piece: string): string {
    if (this.stopped || piece === "") return "";
    this.text += piece;
    // A match cannot start before `emitted`: anything that could begin one was held back.
    let cut = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, this.emitted);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = this.text.slice(0, cut);
      return this.take(cut);
    }
    return this.take(this.text.length - this.heldSuffix());
  }

  /** Releases held-back text at the end of generation (unless a stop string matched). */
  finish(): string {
    return this.stopped ? "" : this.take(this.text.length);
  }

  get result(): string {
    return this.text;
  }

  private take(end: number): string {
    const out = this.text.slice(this.emitted, end);
    this.emitted = end;
    return out;
  }

  /** Length of the longest unemitted suffix that is a proper prefix of some stop string. */
  private heldSuffix(): number {
    let best = 0;
    const avail = this.text.length - this.emitted;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, avail); n > best; n--) {
        if (this.text.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
