// Byte-level BPE tokenizer in the GPT-2 format: 256 byte tokens, merges learned deterministically
// from the embedded corpus, and <|endoftext|> as bos/eos. Emits Hugging Face tokenizer.json and
// tokenizer_config.json objects.

export const EOS_TOKEN = "<|endoftext|>";

// GPT-2 pre-tokenization regex (same pattern as the ByteLevel pre-tokenizer).
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's byte → printable-character table, in GPT-2 vocabulary order. */
function byteTable(): { bytes: number[]; chars: string[] } {
  const bytes: number[] = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const chars = bytes.map((b) => String.fromCharCode(b));
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(String.fromCharCode(256 + n++));
    }
  }
  return { bytes, chars };
}

export interface TrainedBpe {
  /** Token strings by id (byte-level alphabet), without the special token. */
  tokens: string[];
  merges: [string, string][];
}

/** Learns merges until the vocabulary holds `vocabSize` tokens (or no pair is left to merge). */
export function trainBpe(corpus: string, vocabSize: number): TrainedBpe {
  const { bytes, chars } = byteTable();
  const byteChar = new Array<string>(256);
  for (const [i, b] of bytes.entries()) byteChar[b] = chars[i];
  const enc = new TextEncoder();

  const counts = new Map<string, number>();
  for (const piece of corpus.match(PRETOKENIZE) ?? []) {
    const mapped = Array.from(enc.encode(piece), (b) => byteChar[b]).join("");
    counts.set(mapped, (counts.get(mapped) ?? 0) + 1);
  }
  const words = [...counts.entries()].map(([w, c]) => ({ syms: Array.from(w), count: c }));

  const tokens = [...chars];
  const known = new Set(tokens);
  const merges: [string, string][] = [];
  while (tokens.length < vocabSize) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const key = w.syms[i] + " " + w.syms[i + 1]; // symbols never contain a space (byte-level alphabet)
        pairs.set(key, (pairs.get(key) ?? 0) + w.count);
      }
    }
    // Most frequent pair; ties broken by the pair's string so the result never depends on Map order.
    let best = "";
    let bestCount = 0;
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && k < best)) [best, bestCount] = [k, c];
    }
    if (bestCount === 0) break;
    const [a, b] = best.split(" ") as [string, string];
    merges.push([a, b]);
    const merged = a + b;
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        if (w.syms[i] === a && w.syms[i + 1] === b) w.syms.splice(i, 2, merged);
      }
    }
  }
  return { tokens, merges };
}

/** tokenizer.json (Hugging Face tokenizers format) with <|endoftext|> appended as the last id. */
export function tokenizerJson(bpe: TrainedBpe): object {
  const vocab: Record<string, number> = {};
  for (const [i, t] of bpe.tokens.entries()) vocab[t] = i;
  const eosId = bpe.tokens.length;
  vocab[EOS_TOKEN] = eosId;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: eosId, content: EOS_TOKEN, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

export function tokenizerConfigJson(eosId: number, maxLength: number): object {
  return {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: {
      [eosId]: { content: EOS_TOKEN, lstrip: false, normalized: true, rstrip: false, single_word: false, special: true },
    },
    bos_token: EOS_TOKEN,
    eos_token: EOS_TOKEN,
    unk_token: EOS_TOKEN,
    // Off so decoding is a pure byte concatenation: streamed pieces then join to exactly the full text.
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    tokenizer_class: "GPT2Tokenizer",
  };
}

/** True for tokens whose bytes are all printable ASCII (used to give readable tokens a prior). */
export function isPrintableToken(token: string): boolean {
  for (const ch of token) {
    const c = ch.charCodeAt(0);
    // Byte-level alphabet: '!'..'~' map to themselves; 'Ġ' (U+0120) is space, 'Ċ' (U+010A) newline.
    if (!((c >= 33 && c <= 126) || c === 0x120 || c === 0x10a)) return false;
  }
  return true;
}
