"""Trains the built-in GPT-2 (pre-LN, GELU tanh, tied embeddings, learned positions: exactly the graph that
miner-agent/src/model/gpt2-graph.ts writes) on models/build/train.bin with python3-torch on the CPU.

Writes models/build/lm.pt (fp32 state dict + config) and prints held-out perplexity as it goes.
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = {"vocab_size": 4096, "n_positions": 512, "n_embd": int(os.environ.get("N_EMBD", "128")), "n_layer": 4, "n_head": 4, "layer_norm_epsilon": 1e-5}
SEED = 20251126


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        E = c["n_embd"]
        self.n_head = c["n_head"]
        self.ln_1 = nn.LayerNorm(E, eps=c["layer_norm_epsilon"])
        self.c_attn = nn.Linear(E, 3 * E)
        self.c_proj = nn.Linear(E, E)
        self.ln_2 = nn.LayerNorm(E, eps=c["layer_norm_epsilon"])
        self.c_fc = nn.Linear(E, 4 * E)
        self.mlp_proj = nn.Linear(4 * E, E)

    def forward(self, x, mask):
        B, T, E = x.shape
        H = self.n_head
        q, k, v = self.c_attn(self.ln_1(x)).split(E, dim=2)
        heads = lambda t: t.view(B, T, H, E // H).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(E // H))
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, E)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList(Block(c) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=c["layer_norm_epsilon"])
        n = c["n_positions"]
        self.register_buffer("mask", torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c["n_layer"]) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x, self.mask)
        return self.ln_f(x) @ self.wte.weight.T


def batches(data: np.ndarray, T: int, B: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(data) - T - 1, B)
        x = np.stack([data[s : s + T + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


@torch.no_grad()
def perplexity(model: GPT2, data: np.ndarray, T: int, limit: int | None = None) -> float:
    model.eval()
    data = data[:limit] if limit else data
    n = (len(data) - 1) // T
    x = torch.from_numpy(data[: n * T + 1].astype(np.int64))
    total = 0.0
    for i in range(0, n, 16):
        xs = torch.stack([x[j * T : (j + 1) * T] for j in range(i, min(n, i + 16))])
        ys = torch.stack([x[j * T + 1 : (j + 1) * T + 1] for j in range(i, min(n, i + 16))])
        total += F.cross_entropy(model(xs).flatten(0, 1), ys.flatten(), reduction="sum").item()
    model.train()
    return math.exp(total / (n * T))


def main(build: str) -> None:
    b = Path(build)
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    # The schedule runs on wall-clock time, not steps (the machine is shared and its load varies): warm-up over
    # the first 3 % of TIME_BUDGET seconds, cosine decay to 2 % of the peak at the end, then stop.
    budget = float(os.environ.get("TIME_BUDGET", "2700"))
    B, T, lr_max = int(os.environ.get("BATCH", "4")), CONFIG["n_positions"], 3e-3
    train = np.fromfile(b / "train.bin", dtype="<u2")
    held = np.fromfile(b / "heldout.bin", dtype="<u2")
    model = GPT2(CONFIG)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr_max, betas=(0.9, 0.95))
    gen = batches(train, T, B, np.random.default_rng(SEED))
    print(f"params {sum(p.numel() for p in model.parameters())}; random-init held-out ppl {perplexity(model, held, T, 8192):.1f}", flush=True)
    t0, step, done = time.time(), 0, False
    while not done:
        step += 1
        frac = (time.time() - t0) / budget
        done = frac >= 1
        lr = lr_max * frac / 0.03 if frac < 0.03 else 0.5 * lr_max * (1 + math.cos(math.pi * min(1, (frac - 0.03) / 0.97)))
        lr = max(lr, lr_max * 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
        if step % 200 == 0 or done:
            full = done
            print(f"step {step} held-out ppl {perplexity(model, held, T, None if full else 8192):.2f}{' (all held-out)' if full else ''}", flush=True)
            torch.save({"config": CONFIG, "state": model.state_dict(), "step": step}, b / "lm.pt")
    print(json.dumps({"train_seconds": round(time.time() - t0), "steps": step, "batch": B, "context": T}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/build")
