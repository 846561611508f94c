// Constrained decoding (GenerationParams.constraint): the completion must spell the constraint's segments
// in order. Literal segments are forced token by token; at a choice segment only token sequences that
// spell one of the options are allowed (a token trie over each option's tokenization), and the model's own
// logits choose among them. Every other logit is set to -Infinity before the decoding policy runs, so
// greedy decoding takes the argmax among the allowed tokens and seeded sampling samples among them only.
//
// Each segment is tokenized on its own (byte-level BPE decodes a concatenation of token sequences to the
// concatenation of their texts), so the output text is exactly literal + option + literal …, and replicas
// on the same model produce identical tokens (exact-hash consensus holds). The grammar ends with the
// model's end-of-sequence token where it has one; without one, generation stops as soon as the last
// segment is complete (the shortest option wins where one option is a prefix of another).
import { LogitsProcessor, type Tensor } from "@huggingface/transformers";
import type { GenerationConstraint } from "../../../shared/generation.ts";

interface TrieNode {
  children: Map<number, TrieNode>;
  /** An option ends here. */
  terminal: boolean;
}

type Segment = { kind: "literal"; ids: number[] } | { kind: "choice"; root: TrieNode; depth: number };

/** A constraint compiled against one tokenizer: immutable, shareable between requests. */
export class CompiledConstraint {
  readonly segments: readonly Segment[];
  readonly eos: number | null;
  /** The most tokens a completion can take (EOS included). */
  readonly maxTokens: number;

  constructor(constraint: GenerationConstraint, encode: (text: string) => number[], eos: number | null) {
    const segments: Segment[] = [];
    for (const seg of constraint.segments) {
      if ("literal" in seg) {
        const ids = seg.literal ? encode(seg.literal) : [];
        if (ids.length > 0) segments.push({ kind: "literal", ids });
        continue;
      }
      const root: TrieNode = { children: new Map(), terminal: false };
      let depth = 0;
      for (const option of seg.choice) {
        const ids = encode(option);
        if (ids.length === 0) throw new Error(`choice option ${JSON.stringify(option)} encodes to no tokens`);
        depth = Math.max(depth, ids.length);
        let node = root;
        for (const id of ids) {
          let next = node.children.get(id);
          if (!next) node.children.set(id, (next = { children: new Map(), terminal: false }));
          node = next;
        }
        node.terminal = true;
      }
      segments.push({ kind: "choice", root, depth });
    }
    this.segments = segments;
    this.eos = eos;
    this.maxTokens = segments.reduce((n, s) => n + (s.kind === "literal" ? s.ids.length : s.depth), 0) + (eos == null ? 0 : 1);
  }

  start(): ConstraintState {
    return new ConstraintState(this);
  }
}

/** Where one generation stands in the grammar. `allowed()` is what may come next; `accept()` moves on. */
export class ConstraintState {
  private readonly c: CompiledConstraint;
  /** Index of the current segment; segments.length: every segment done (EOS may still be owed). */
  private seg = 0;
  /** Position inside a literal. */
  private pos = 0;
  /** Node inside a choice's trie. */
  private node: TrieNode | null = null;
  private finished = false;

  constructor(c: CompiledConstraint) {
    this.c = c;
    this.enter(0);
  }

  /** True once the completion is complete: nothing more may be generated. */
  get done(): boolean {
    return this.finished;
  }

  /** Token ids that may come next, ascending (empty when done). */
  allowed(): number[] {
    if (this.finished) return [];
    const out = new Set<number>();
    const seg = this.c.segments[this.seg];
    if (!seg) {
      if (this.c.eos != null) out.add(this.c.eos);
    } else if (seg.kind === "literal") {
      out.add(seg.ids[this.pos]);
    } else {
      for (const id of this.node!.children.keys()) out.add(id);
      if (this.node!.terminal) for (const id of this.startOf(this.seg + 1)) out.add(id);
    }
    return [...out].sort((a, b) => a - b);
  }

  /** Consumes one generated token; throws if the grammar does not allow it. */
  accept(id: number): void {
    if (this.finished) throw new Error(`constraint: token ${id} after the completion ended`);
    const seg = this.c.segments[this.seg];
    if (!seg) {
      if (id !== this.c.eos) throw new Error(`constraint: expected end of sequence, got token ${id}`);
      this.finished = true;
      return;
    }
    if (seg.kind === "literal") {
      if (id !== seg.ids[this.pos]) throw new Error(`constraint: expected token ${seg.ids[this.pos]}, got ${id}`);
      if (++this.pos === seg.ids.length) this.enter(this.seg + 1);
      return;
    }
    const child = this.node!.children.get(id);
    if (child) {
      this.node = child;
      if (child.children.size === 0) this.enter(this.seg + 1);
      else if (child.terminal && this.seg + 1 === this.c.segments.length && this.c.eos == null) this.finished = true;
      return;
    }
    if (this.node!.terminal) {
      this.enter(this.seg + 1);
      this.accept(id);
      return;
    }
    throw new Error(`constraint: token ${id} is not allowed here`);
  }

  private enter(seg: number): void {
    this.seg = seg;
    this.pos = 0;
    const s = this.c.segments[seg];
    this.node = s?.kind === "choice" ? s.root : null;
    if (!s && this.c.eos == null) this.finished = true;
  }

  /** Tokens that can start segment `seg` (or end the sequence past the last one). */
  private startOf(seg: number): number[] {
    const s = this.c.segments[seg];
    if (!s) return this.c.eos == null ? [] : [this.c.eos];
    return s.kind === "literal" ? [s.ids[0]] : [...s.root.children.keys()];
  }
}

/**
 * Masks every token the grammar does not allow next. Runs before the DecodingPolicy, so penalties and
 * sampling only ever see allowed tokens. The state advances from the generated ids it is shown.
 */
export class ConstraintProcessor extends LogitsProcessor {
  readonly state: ConstraintState;
  private seen: number;

  constructor(state: ConstraintState, promptLength: number) {
    super();
    this.state = state;
    this.seen = promptLength;
  }

  /** Feeds tokens generated since the last call into the state (the stopping check calls it too). */
  sync(ids: readonly bigint[]): void {
    for (; this.seen < ids.length; this.seen++) this.state.accept(Number(ids[this.seen]));
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    if (inputIds.length !== 1) throw new Error("batch size 1 only");
    this.sync(inputIds[0]);
    const allowed = this.state.allowed();
    if (allowed.length === 0) return logits;
    const data = logits.data as Float32Array;
    const keep = allowed.filter((id) => id < data.length).map((id) => [id, data[id]] as const);
    data.fill(-Infinity);
    // A NaN logit would lose every comparison; an allowed token must stay selectable.
    for (const [id, v] of keep) data[id] = Number.isNaN(v) ? -1e30 : v;
    return logits;
  }
}
