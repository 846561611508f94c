"""Trains the built-in sentence embedder `edge/tiny-embed` and writes what the miner builds its ONNX from.

    nice -n 15 python3 models/embed/train.py [--steps N] [--dim E] [--vocab V]

The model is mean-pooled token vectors (what transformers.js' feature-extraction pipeline computes from the
encoder's last_hidden_state with pooling "mean", normalize true), trained contrastively: each batch holds B
positive pairs (data.py) and every other sentence in the batch is a negative (symmetric InfoNCE). A token's
learned length is its weight in the mean, so frequent function words learn to count for little.

Writes into models/embed/: vocab.txt, embeddings.bin (per-row float32 scale, then 4-bit rows of a rank-240 projection), manifest.json,
eval-pairs.jsonl (the held-out evaluation set) and eval.json (its figures, trained vs untrained).
"""

import argparse
import hashlib
import json
import os
import random
import struct
import sys
import time
from collections import Counter

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import data  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20251126


def make_pairs(synsets, synonyms, rnd):
    """Positive pairs from training synsets, one pass (re-drawn every epoch for fresh paraphrases)."""
    pairs = []
    for s in synsets:
        sents = [s.definition] + s.examples
        for t in sents:
            pairs.append((t, data.paraphrase(t, synonyms, rnd)))
        for e in s.examples:
            pairs.append((s.definition, e))
        pairs.append((data.lemma_text(s), s.definition))
    rnd.shuffle(pairs)
    return pairs


def eval_set(synsets, synonyms, n=200):
    """Held-out synsets only: paraphrase, related (definition vs its example) and unrelated pairs, n of each."""
    rnd = random.Random(SEED + 1)
    ex = [(s, e) for s in synsets for e in s.examples if len(e.split()) >= 6]
    rnd.shuffle(ex)
    para = []
    for s, e in ex:
        p = data.paraphrase(e, synonyms, rnd, p_syn=1.0, p_drop=0.1, p_swap=0.0)
        if p != e:
            para.append({"kind": "paraphrase", "a": e, "b": p})
        if len(para) == n:
            break
    related = [{"kind": "related", "a": s.definition, "b": e} for s, e in ex[-n:]]
    sents = [t for s in synsets for t in [s.definition] + s.examples if len(t.split()) >= 5]
    unrelated = []
    while len(unrelated) < n:
        a, b = rnd.sample(sents, 2)
        unrelated.append({"kind": "unrelated", "a": a, "b": b})
    return para + related + unrelated


class Embedder(torch.nn.Module):
    def __init__(self, vocab_size, dim):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(vocab_size, dim, mode="mean")
        torch.nn.init.normal_(self.emb.weight, std=0.1)

    def forward(self, ids, offsets):
        return torch.nn.functional.normalize(self.emb(ids, offsets), dim=-1)


def batch(tok, texts):
    ids, offsets = [], []
    for t in texts:
        offsets.append(len(ids))
        enc = tok.encode(t)[:128] or [tok.unk]
        ids.extend(enc)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def embed(model, tok, texts):
    with torch.no_grad():
        return model(*batch(tok, texts)).numpy()


def auc(pos, neg):
    """P(a paraphrase distance < an unrelated distance), ties half."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    return float(((pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))


def evaluate(model, tok, pairs):
    a = embed(model, tok, [p["a"] for p in pairs])
    b = embed(model, tok, [p["b"] for p in pairs])
    d = 1 - (a * b).sum(-1)
    by = {k: d[[i for i, p in enumerate(pairs) if p["kind"] == k]] for k in ("paraphrase", "related", "unrelated")}
    out = {f"mean_distance_{k}": round(float(v.mean()), 4) for k, v in by.items()}
    out["auc_paraphrase_vs_unrelated"] = round(auc(by["paraphrase"], by["unrelated"]), 4)
    out["auc_related_vs_unrelated"] = round(auc(by["related"], by["unrelated"]), 4)
    return out


def style_block(tok, texts, dims, weight):
    """Register features appended to the learned vectors: the `dims` most frequent whole words of the corpus
    (the, of, a, to, ...) each get their own axis of length `weight`. Mean pooling turns them into the text's
    function-word profile, which any two samples of English prose share and junk or word salad lacks; the
    learned part, where these words are short, still carries the meaning."""
    counts = Counter(i for t in texts for i in tok.encode(t))
    top = [i for i, _ in counts.most_common() if tok.vocab[i].isalpha() and not tok.vocab[i].startswith("##")][:dims]
    block = np.zeros((len(tok.vocab), dims), dtype=np.float32)
    for k, i in enumerate(top):
        block[i, k] = weight
    return block


def quantize(w, rank, bits):
    """The best rank-`rank` projection of the rows (top right singular vectors: inner products between tokens are
    kept as far as `rank` dimensions can), then per-row symmetric `bits`-bit integers: row i = scale[i] * q[i].
    Sized so the committed file stays under 2 MiB (16,384 rows × 240 dims at 4 bits)."""
    if rank < w.shape[1]:
        _, _, vt = np.linalg.svd(w, full_matrices=False)
        w = w @ vt[:rank].T
    top = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=1) / top
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -top, top).astype(np.int8)
    return scale.astype(np.float32), q


def pack(q, bits):
    """int8 rows as stored: 4-bit values two per byte (even column in the low nibble), or int8 as is."""
    if bits == 8:
        return q.tobytes()
    u = (q & 0xF).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--checkpoint", default="/tmp/embed-checkpoint.pt", help="float weights, saved after training")
    ap.add_argument("--export-only", action="store_true", help="skip training: export --checkpoint")
    ap.add_argument("--rank", type=int, default=240, help="dimensions kept (a rank-`rank` projection of the vectors)")
    ap.add_argument("--bits", type=int, default=4, choices=(4, 8), help="bits per stored value")
    ap.add_argument("--style-dims", type=int, default=0, help="register features: the N most frequent words")
    ap.add_argument("--style-weight", type=float, default=0.0, help="length of a register feature")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    rnd = random.Random(SEED)
    t0 = time.time()

    synsets = data.read_synsets()
    synonyms = data.synonym_table(synsets)
    train = [s for s in synsets if not data.held_out(s.key)]
    held = [s for s in synsets if data.held_out(s.key)]
    texts = [t for s in synsets for t in [s.definition, data.lemma_text(s)] + s.examples]
    vocab = data.build_vocab(texts, args.vocab)
    tok = data.Tokenizer(vocab)
    pairs_eval = eval_set(held, synonyms)
    print(f"{len(synsets)} synsets ({len(held)} held out), vocab {len(vocab)}, {time.time() - t0:.0f}s", flush=True)

    model = Embedder(len(vocab), args.dim)
    untrained = evaluate(model, tok, pairs_eval)
    print("untrained", untrained, flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    pairs, pos, step = [], 0, 0
    if args.export_only:
        model.load_state_dict(torch.load(args.checkpoint))
        step = args.steps
    while step < args.steps:
        if pos + args.batch > len(pairs):
            pairs, pos = make_pairs(train, synonyms, rnd), 0
        chunk = pairs[pos : pos + args.batch]
        pos += args.batch
        a = model(*batch(tok, [p[0] for p in chunk]))
        b = model(*batch(tok, [p[1] for p in chunk]))
        logits = a @ b.T / args.temperature
        target = torch.arange(len(chunk))
        loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 500 == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", evaluate(model, tok, pairs_eval), flush=True)

    if not args.export_only:
        torch.save(model.state_dict(), args.checkpoint)
    print("trained (float)", evaluate(model, tok, pairs_eval), flush=True)
    w = model.emb.weight.detach().numpy().astype(np.float32)
    if args.style_dims:
        w = np.concatenate([w, style_block(tok, texts, args.style_dims, args.style_weight)], axis=1)
    w[vocab.index(data.PAD)] = 0  # padding carries no meaning (and is masked anyway)
    scale, q = quantize(w, args.rank, args.bits)
    model = Embedder(len(vocab), q.shape[1])
    model.emb.weight.data = torch.from_numpy(scale[:, None] * q.astype(np.float32))
    trained = evaluate(model, tok, pairs_eval)  # the int8 weights the miner builds from
    print(f"trained (rank {q.shape[1]}, int{args.bits})", trained, flush=True)

    blob = scale.astype("<f4").tobytes() + pack(q, args.bits)
    with open(os.path.join(HERE, "embeddings.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(HERE, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    manifest = {
        "format": "per-row float32 scale [vocab_size], then rows [vocab_size, hidden_size] of `bits`-bit signed integers (4: two per byte, even column in the low nibble), little-endian",
        "bits": args.bits,
        "vocab_size": len(vocab),
        "hidden_size": int(q.shape[1]),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "train": {k: getattr(args, k) for k in ("steps", "dim", "vocab", "batch", "lr", "temperature", "rank", "bits", "style_dims", "style_weight")}
        | {"seed": SEED},
    }
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    with open(os.path.join(HERE, "eval-pairs.jsonl"), "w", encoding="utf-8") as f:
        for p in pairs_eval:
            f.write(json.dumps(p) + "\n")
    # What the ONNX built from these weights must reproduce (checked by test/integration/embed-model.test.ts):
    # the token ids of 200 evaluation texts and the vectors of the first 8.
    texts = [p["a"] for p in pairs_eval[::3]][:200]
    ref = {"texts": texts, "ids": [tok.encode(t) for t in texts], "vectors": [[round(float(x), 6) for x in v] for v in embed(model, tok, texts[:8])]}
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(ref) + "\n")
    report = {"pairs": {k: sum(p["kind"] == k for p in pairs_eval) for k in ("paraphrase", "related", "unrelated")}}
    seconds = round(time.time() - t0)
    if args.export_only:  # keep the training run's figure, not this export's
        seconds = json.load(open(os.path.join(HERE, "eval.json"))).get("train_seconds", seconds)
    report |= {"untrained": untrained, "trained_quantized": trained, "train_seconds": seconds}
    with open(os.path.join(HERE, "eval.json"), "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    assert struct.calcsize("<f") == 4


if __name__ == "__main__":
    main()
