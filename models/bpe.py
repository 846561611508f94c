"""Byte-level BPE (GPT-2 format) trained on the corpus, and the tokenized corpus as uint16 files.

The algorithm and tie-break of the TypeScript trainer it replaces (most frequent pair; ties go to the
smaller "a b" string), but with incremental pair counts so 4k merges over the whole corpus take seconds.
Writes bpe.json ({"tokens": [...], "merges": [[a, b], ...]}, <|endoftext|> is id len(tokens)),
train.bin / heldout.bin (little-endian uint16 token ids; sentences joined by spaces into documents of 1-8
sentences, documents separated by <|endoftext|>).
"""

import heapq
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

VOCAB_SIZE = 4096  # including <|endoftext|>
SEED = 20251126
# GPT-2's pre-tokenizer regex; the corpus is ASCII, so \p{L} is [A-Za-z] and \p{N} is [0-9].
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def byte_table() -> tuple[list[int], list[str]]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = [chr(b) for b in bs]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            chars.append(chr(256 + n))
            n += 1
    return bs, chars


def byte_chars() -> list[str]:
    bs, chars = byte_table()
    out = [""] * 256
    for b, c in zip(bs, chars):
        out[b] = c
    return out


def train(text: str, vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    bc = byte_chars()
    counts = Counter("".join(bc[b] for b in piece.encode()) for piece in PRETOKENIZE.findall(text))
    words = [list(w) for w in counts]
    freq = list(counts.values())
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)

    def account(i: int, sign: int) -> None:
        w = words[i]
        for p in zip(w, w[1:]):
            pairs[p] += sign * freq[i]
            if sign > 0:
                where[p].add(i)

    for i in range(len(words)):
        account(i, 1)
    heap = [(-c, a + " " + b) for (a, b), c in pairs.items()]
    heapq.heapify(heap)
    tokens = byte_table()[1]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size - 1 and heap:
        neg, key = heapq.heappop(heap)
        a, b = key.split(" ")
        if pairs.get((a, b), 0) != -neg or neg == 0:
            continue  # stale heap entry
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            tokens.append(a + b)
        touched = set()
        for i in list(where[(a, b)]):
            account(i, -1)
            w, j, out = words[i], 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            account(i, 1)
            touched.update(zip(out, out[1:]))
        pairs.pop((a, b), None)
        for p in touched:
            if pairs.get(p, 0) > 0:
                heapq.heappush(heap, (-pairs[p], p[0] + " " + p[1]))
    return tokens, merges


class Encoder:
    def __init__(self, tokens: list[str], merges: list[tuple[str, str]]):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.rank = {m: r for r, m in enumerate(merges)}
        self.bc = byte_chars()
        self.cache: dict[str, list[int]] = {}

    def piece(self, piece: str) -> list[int]:
        hit = self.cache.get(piece)
        if hit is not None:
            return hit
        w = ["".join(self.bc[b] for b in ch.encode()) for ch in piece]
        w = list("".join(w))
        while len(w) > 1:
            best = min(zip(w, w[1:]), key=lambda p: self.rank.get(p, 1 << 30))
            if best not in self.rank:
                break
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(w[j] + w[j + 1])
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            w = out
        ids = [self.ids[t] for t in w]
        self.cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        return [i for piece in PRETOKENIZE.findall(text) for i in self.piece(piece)]


def documents(lines: list[str], seed: int) -> list[str]:
    rnd = random.Random(seed)
    docs, i = [], 0
    while i < len(lines):
        n = rnd.randint(1, 8)
        docs.append(" ".join(lines[i : i + n]))
        i += n
    return docs


def encode_file(enc: Encoder, eos: int, src: Path, dst: Path, seed: int) -> int:
    ids: list[int] = []
    for doc in documents(src.read_text().splitlines(), seed):
        ids.extend(enc.encode(doc))
        ids.append(eos)
    np.asarray(ids, dtype="<u2").tofile(dst)
    return len(ids)


def main(build: str) -> None:
    b = Path(build)
    tokens, merges = train((b / "train.txt").read_text(), VOCAB_SIZE)
    (b / "bpe.json").write_text(json.dumps({"tokens": tokens, "merges": merges}, ensure_ascii=False) + "\n")
    enc = Encoder(tokens, merges)
    eos = len(tokens)
    n_train = encode_file(enc, eos, b / "train.txt", b / "train.bin", SEED)
    n_held = encode_file(enc, eos, b / "heldout.txt", b / "heldout.bin", SEED + 1)
    print(f"bpe: {len(tokens) + 1} tokens ({len(merges)} merges); train {n_train} tokens, held-out {n_held}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/build")
