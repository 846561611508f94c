"""Writes the trained model's committed files: miner-agent/src/model/data/lm-weights.bin (the graph's layout:
matrices as int8 rows with a float32 scale each, vectors fp16 — 1.4 MB; format in miner-agent/src/model/lm-data.ts)
and lm-bpe.json, plus models/reference-logits.json, the shipped (quantized) model's logits on a few prompts that
test/integration/lm-model.test.ts checks the ONNX model against.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bpe import Encoder  # noqa: E402
from train import GPT2  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "miner-agent/src/model/data"
REFERENCE_PROMPTS = ["The river", "A language model is", "To walk is to", "She opened the door and"]
REFERENCE_IDS = list(range(0, 4096, 97))  # a spread of vocabulary columns to compare


def layout(n_layer: int) -> list[tuple[str, str, bool]]:
    """(graph name, torch state key, transposed): linear weights are [out, in] in torch, [in, out] in the graph."""
    rows = [("wte", "wte.weight", False), ("wpe", "wpe.weight", False)]
    for l in range(n_layer):
        g, p = f"h.{l}.", f"h.{l}."
        rows += [
            (g + "ln1_g", p + "ln_1.weight", False), (g + "ln1_b", p + "ln_1.bias", False),
            (g + "attn_w", p + "c_attn.weight", True), (g + "attn_b", p + "c_attn.bias", False),
            (g + "proj_w", p + "c_proj.weight", True), (g + "proj_b", p + "c_proj.bias", False),
            (g + "ln2_g", p + "ln_2.weight", False), (g + "ln2_b", p + "ln_2.bias", False),
            (g + "fc_w", p + "c_fc.weight", True), (g + "fc_b", p + "c_fc.bias", False),
            (g + "out_w", p + "mlp_proj.weight", True), (g + "out_b", p + "mlp_proj.bias", False),
        ]
    return rows + [("lnf_g", "ln_f.weight", False), ("lnf_b", "ln_f.bias", False)]


def graph_tensors(state: dict, n_layer: int) -> list[tuple[str, np.ndarray]]:
    t = lambda k: state[k].detach().float().numpy()  # noqa: E731
    return [(g, t(k).T if tr else t(k)) for g, k, tr in layout(n_layer)]


def quantize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 of a matrix: row i = scale[i] * q[i]."""
    scale = np.abs(a).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    return scale.astype(np.float32), np.clip(np.rint(a / scale[:, None]), -127, 127).astype(np.int8)


def shipped(a: np.ndarray) -> np.ndarray:
    """What the file holds, as float32: matrices int8-rounded per row, vectors fp16-rounded."""
    if a.ndim == 2:
        scale, q = quantize(a)
        return scale[:, None] * q.astype(np.float32)
    return a.astype(np.float16).astype(np.float32)


def write_weights(config: dict, tensors: list[tuple[str, np.ndarray]], path: Path) -> None:
    header = json.dumps({"config": config, "tensors": [{"name": n, "shape": list(a.shape)} for n, a in tensors]}, separators=(",", ":"))
    header += " " * (len(header) % 2)
    with path.open("wb") as f:
        f.write(b"EGPT2Q08" + struct.pack("<I", len(header)) + header.encode())
        for _, a in tensors:
            if a.ndim == 2:
                scale, q = quantize(a)
                f.write(scale.astype("<f4").tobytes() + q.tobytes())
            else:
                f.write(np.ascontiguousarray(a, dtype="<f2").tobytes())


def main(build: str) -> None:
    b = Path(build)
    ckpt = torch.load(b / "lm.pt")
    config = ckpt["config"]
    tensors = graph_tensors(ckpt["state"], config["n_layer"])
    DATA.mkdir(parents=True, exist_ok=True)
    write_weights(config, tensors, DATA / "lm-weights.bin")
    # Reference logits come from the shipped (quantized) weights, not from the trained float ones.
    deq = {g: shipped(a) for g, a in tensors}
    state = {k: torch.from_numpy(np.ascontiguousarray(deq[g].T if tr else deq[g])) for g, k, tr in layout(config["n_layer"])}
    bpe = json.loads((b / "bpe.json").read_text())
    (DATA / "lm-bpe.json").write_text(json.dumps(bpe, ensure_ascii=False) + "\n")

    model = GPT2(config)
    model.load_state_dict(state)
    model.eval()
    enc = Encoder(bpe["tokens"], [tuple(m) for m in bpe["merges"]])
    refs = []
    with torch.no_grad():
        for prompt in REFERENCE_PROMPTS:
            ids = enc.encode(prompt)
            logits = model(torch.tensor([ids]))[0, -1]
            refs.append({"prompt": prompt, "ids": ids, "argmax": int(logits.argmax()), "logits": [round(float(logits[i]), 5) for i in REFERENCE_IDS]})
    rows = ",\n  ".join(json.dumps(r) for r in refs)
    text = f'{{\n "columns": {json.dumps(REFERENCE_IDS)},\n "prompts": [\n  {rows}\n ]\n}}\n'
    (Path(__file__).parent / "reference-logits.json").write_text(text)
    print(f"wrote {DATA / 'lm-weights.bin'} ({(DATA / 'lm-weights.bin').stat().st_size} bytes) and reference logits", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/build")
