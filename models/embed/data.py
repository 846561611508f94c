"""WordNet 3.0 (Debian `wordnet-base`) as training data for the built-in sentence embedder.

Sentences are WordNet's definitions and usage examples. Positive pairs (things that should embed close):
  - a sentence and a paraphrase of it: words replaced by WordNet synonyms, a few dropped, neighbours swapped;
  - a synset's definition and one of its usage examples (same meaning, other words);
  - a synset's lemmas ("dog, domestic dog") and its definition.
Synsets are split by a hash of their offset: held-out synsets never reach training, and the evaluation set is
built from them only.

The tokenizer is a lower-cased WordPiece vocabulary over the same text, written as a Hugging Face
tokenizer.json that transformers.js loads; `encode` here reproduces its output exactly (checked by the
TypeScript evaluation, which compares token ids).
"""

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import unicodedata

WORDNET = "/usr/share/wordnet"
PARTS = ("noun", "verb", "adj", "adv")
PAD, UNK = "[PAD]", "[UNK]"
# transformers.js' BertPreTokenizer splits on /[^\s{P}]+|[{P}]/u where P is \p{P} plus ASCII symbols.
_ASCII_PUNCT = {chr(c) for r in ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)) for c in range(r[0], r[1] + 1)}
_WORD = re.compile(r"[a-z][a-z'-]*")
# Words never replaced by synonyms (their WordNet "synonyms" are other senses: "a" → "angstrom").
STOP = set(
    """a an the of to in on at by for with from and or but not no is are was were be been being it its this that
    these those as if than then so such into over under about after before between through during without within
    he she they we you i him her them us me my your his their our who whom which what when where why how all any
    some each every more most other another one two can could may might must shall should will would do does did
    has have had there here up down out off very also only just usually especially something someone""".split()
)


@dataclass
class Synset:
    key: str
    lemmas: list[str]
    definition: str
    examples: list[str] = field(default_factory=list)


def held_out(key: str) -> bool:
    """About 8 % of synsets, chosen by hash so the split never depends on file order."""
    return hashlib.sha256(key.encode()).digest()[0] < 21


def read_synsets() -> list[Synset]:
    out = []
    for part in PARTS:
        with open(f"{WORDNET}/data.{part}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # licence header
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n = int(fields[3], 16)
                lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(n)]
                parts = [p.strip() for p in gloss.strip().split(";")]
                definition = parts[0]
                examples = [p.strip('"').strip() for p in parts[1:] if p.startswith('"')]
                if definition:
                    out.append(Synset(f"{part}:{fields[0]}", lemmas, definition, [e for e in examples if e]))
    return out


def synonym_table(synsets: list[Synset]) -> dict[str, list[str]]:
    """word → lemmas of the first two synsets that list it (WordNet lists frequent senses first)."""
    senses: dict[str, list[Synset]] = {}
    for s in synsets:
        for lemma in s.lemmas:
            senses.setdefault(lemma.lower(), []).append(s)
    table = {}
    for word, ss in senses.items():
        syn = sorted({lemma.lower() for s in ss[:2] for lemma in s.lemmas if lemma.lower() != word})
        if syn and word not in STOP:
            table[word] = syn
    return table


def _punct(c: str) -> bool:
    return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


def pretokenize(text: str) -> list[str]:
    """Lower-case (the tokenizer's normalizer), then runs of letters/digits and single punctuation marks."""
    out, cur = [], []
    for c in text.lower():
        if c.isspace() or _punct(c):
            if cur:
                out.append("".join(cur))
                cur = []
            if not c.isspace():
                out.append(c)
        else:
            cur.append(c)
    if cur:
        out.append("".join(cur))
    return out


def build_vocab(texts: list[str], size: int) -> list[str]:
    """[PAD], [UNK], every character (alone and as a ##continuation), frequent word endings, frequent words."""
    words = Counter(w for t in texts for w in pretokenize(t))
    chars = sorted({c for w in words for c in w if words[w] >= 3})
    vocab = [PAD, UNK] + chars + ["##" + c for c in chars]
    endings = Counter()
    for w, c in words.items():
        for k in (2, 3, 4):
            if len(w) > k + 2:
                endings["##" + w[-k:]] += c
    vocab += [e for e, _ in endings.most_common(600)]
    seen = set(vocab)
    for w, _ in words.most_common():
        if len(vocab) >= size:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    return vocab


class Tokenizer:
    """WordPiece, greedy longest match first, exactly as transformers.js' WordPiece model."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.ids = {t: i for i, t in enumerate(vocab)}
        self.unk = self.ids[UNK]
        self.cache: dict[str, list[int]] = {}

    def word(self, w: str) -> list[int]:
        hit = self.cache.get(w)
        if hit is not None:
            return hit
        chars = list(w)
        out, i = [], 0
        if len(chars) > 100:
            out = [self.unk]
        while i < len(chars) and out != [self.unk]:
            end, piece = len(chars), None
            while i < end:
                s = "".join(chars[i:end])
                if i > 0:
                    s = "##" + s
                if s in self.ids:
                    piece = self.ids[s]
                    break
                end -= 1
            if piece is None:
                out = [self.unk]
                break
            out.append(piece)
            i = end
        self.cache[w] = out
        return out

    def encode(self, text: str) -> list[int]:
        return [t for w in pretokenize(text) for t in self.word(w)]


def paraphrase(text: str, synonyms: dict[str, list[str]], rnd: random.Random, p_syn=0.35, p_drop=0.1, p_swap=0.1) -> str:
    """Synonym substitution, word dropout and neighbour swaps: same meaning, partly other words."""
    words = text.split()
    out = []
    for w in words:
        core = w.strip(".,;:!?\"'()").lower()
        if len(words) > 3 and rnd.random() < p_drop:
            continue
        if core in synonyms and rnd.random() < p_syn:
            out.append(rnd.choice(synonyms[core]))
        else:
            out.append(w)
    for i in range(len(out) - 1):
        if rnd.random() < p_swap:
            out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out) if out else text


def lemma_text(s: Synset) -> str:
    return ", ".join(s.lemmas)
