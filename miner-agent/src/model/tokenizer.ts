// Byte-level BPE tokenizer in the GPT-2 format: 256 byte tokens, the merges models/bpe.py learned from the
// training corpus (committed in data/lm-bpe.json), and <|endoftext|> as bos/eos. Emits Hugging Face
// tokenizer.json and tokenizer_config.json objects.

export const EOS_TOKEN = "<|endoftext|>";

export interface TrainedBpe {
  /** Token strings by id (byte-level alphabet), without the special token. */
  tokens: string[];
  merges: [string, string][];
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
