#!/usr/bin/env bash
# `npm run models:train`: rebuilds the built-in language model's committed data from Debian packages (models/README.md).
# Installs what it needs, builds the corpus, trains the BPE and the model, writes miner-agent/src/model/data/ and
# models/reference-logits.json, then evaluates. Not part of CI: CI builds the ONNX model from the committed files.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=models/build
PY=/usr/bin/python3 # Debian's python3-torch lives in the system interpreter, not in a pyenv/venv one
PKGS=(python3-torch python3-numpy libopenblas0-pthread wordnet-base dict-jargon)

missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # libopenblas0-pthread: python3-torch otherwise runs its matmuls on the reference BLAS (~8x slower).
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi

mkdir -p "$BUILD"
$PY models/corpus.py "$BUILD"
$PY models/bpe.py "$BUILD"
# TIME_BUDGET (seconds of wall clock) sets the schedule; THREADS the torch threads. The committed model: 2700 s, 2 threads.
T="${THREADS:-2}"
THREADS="$T" OMP_NUM_THREADS="$T" OPENBLAS_NUM_THREADS="$T" OMP_WAIT_POLICY=PASSIVE TIME_BUDGET="${TIME_BUDGET:-2700}" \
  nice -n 15 $PY models/train.py "$BUILD" | tee "$BUILD/train.log"
$PY models/export.py "$BUILD"
node models/eval.ts
