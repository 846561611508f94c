"""Builds the English training corpus from Debian packages whose licences allow shipping derived weights.

Sources (see models/README.md for the licences):
  * WordNet 3.0 (package wordnet-base, WordNet licence: use/copy/modify/distribute for any purpose):
    every quoted usage example, and one defining sentence per noun and verb sense built from its gloss
    ("A disaster is an act that has disastrous consequences.", "To modernize is to become ...").
  * The Jargon File 4.4.7 (package dict-jargon, public domain): its prose paragraphs, markup removed.

Output: one plain ASCII sentence per line, deterministically shuffled, split into train and held-out files.
"""

import gzip
import random
import re
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
JARGON = Path("/usr/share/dictd/jargon.dict.dz")
SEED = 20251126
HELDOUT_FRACTION = 0.02

ASCII_SUBS = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ", "\u2013": "-", "\u2026": "..."}


def clean(s: str) -> str | None:
    for k, v in ASCII_SUBS.items():
        s = s.replace(k, v)
    s = re.sub(r"\s+", " ", s).strip()
    if not s or not s.isascii():
        return None
    # No markup, code, URLs or bracketed asides: plain sentences only.
    if re.search(r"[{}<>\[\]|\\_@#$%^*=~`/]|https?:|\.\w{2,4}\b(?!\s)", s):
        return None
    if s.count('"') % 2 or s.count("(") != s.count(")"):
        return None
    words = s.split()
    if not 4 <= len(words) <= 40:
        return None
    s = s[0].upper() + s[1:]
    if s[-1] not in ".!?":
        s += "."
    return s


def article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


def wordnet_sentences():
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            lemma = fields[4].replace("_", " ")
            lemma = re.sub(r"\(.*?\)$", "", lemma)  # adjective markers like "(a)"
            parts = [p.strip() for p in gloss.split(";")]
            definition = parts[0]
            for ex in parts[1:]:
                m = re.fullmatch(r'"(.+)"(?:\s*-+\s*.*)?', ex)
                if m:
                    yield m.group(1)
            if not definition or definition.startswith("(") or not lemma.isascii():
                continue
            if pos == "noun" and lemma[0].islower():
                d = definition
                if re.match(r"^(a|an|the|any|one|someone|something)\b", d):
                    yield f"{article(lemma)} {lemma} is {d}"
                else:
                    yield f"{lemma[0].upper() + lemma[1:]} is {d}"
            elif pos == "verb" and not definition.startswith(("be ", "have ")):
                yield f"To {lemma} is to {definition}"


def jargon_sentences():
    text = gzip.open(JARGON, "rt", encoding="utf-8").read()
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(line.strip() for line in para.splitlines())
        para = re.sub(r"\{\s*([^{}]*?)\s*\}", r"\1", para)  # {cross reference} -> cross reference
        if len(para) < 80 or para.startswith("["):
            para = re.sub(r"^\[[^\]]*\]\s*", "", para)
            if len(para) < 80:
                continue
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
            yield sent


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    sentences: list[str] = []
    counts = {}
    for name, source in (("wordnet", wordnet_sentences()), ("jargon", jargon_sentences())):
        n = 0
        for raw in source:
            s = clean(raw)
            if s and s not in seen:
                seen.add(s)
                sentences.append(s)
                n += 1
        counts[name] = n
    random.Random(SEED).shuffle(sentences)
    n_held = int(len(sentences) * HELDOUT_FRACTION)
    (out / "heldout.txt").write_text("\n".join(sentences[:n_held]) + "\n")
    (out / "train.txt").write_text("\n".join(sentences[n_held:]) + "\n")
    words = sum(len(s.split()) for s in sentences)
    print(f"corpus: {len(sentences)} sentences ({counts}), {words} words; held out {n_held}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/build")
