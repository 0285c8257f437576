#!/usr/bin/env bash
# Run the chapter-8 sweep on a GPU machine from a plain checkout (no install needed):
#
#   bash book/params/ch08_resnet_sweep/gpu_run.sh [SWEEP.yaml]     # default: gpu_sweep.yaml
#
# Needs python3 with torch (>= 2.4), numpy, pandas, pyyaml and tqdm. Records go to
# $OUT/ch08_full (or ./ch08_full when OUT is unset), one JSON per batch size, each written
# as soon as its run ends, so a timeout keeps every finished run. Rerunning the same command
# resumes. Commit the records under data/results/ch08_full/ for the book to show them.
#
# CIFAR-10: read from $SGDNOISE_DATA or data/cifar-10-batches-py; when missing, it is
# expanded from the compact copy (cifar10_jpeg_streams.npz + expand.py) found in
# $CIFAR_COMPACT_DIR, .device/cifar10, shared/data/cifar10 or ../shared/data/cifar10.
set -euo pipefail
cd "$(dirname "$0")/../../.."
CONFIG="${1:-book/params/ch08_resnet_sweep/gpu_sweep.yaml}"
OUT_DIR="${OUT:-.}/ch08_full"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

DATA_ROOT="${SGDNOISE_DATA:-$PWD/data}"
if [ ! -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ]; then
  for d in "${CIFAR_COMPACT_DIR:-}" .device/cifar10 shared/data/cifar10 ../shared/data/cifar10; do
    if [ -n "$d" ] && [ -f "$d/expand.py" ] && [ -f "$d/cifar10_jpeg_streams.npz" ]; then
      echo "[gpu_run] expanding CIFAR-10 from $d into $DATA_ROOT"
      python3 "$d/expand.py" "$DATA_ROOT"
      break
    fi
  done
fi
if [ ! -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ]; then
  echo "[gpu_run] CIFAR-10 not found under $DATA_ROOT/cifar-10-batches-py" >&2
  exit 2
fi
export SGDNOISE_DATA="$DATA_ROOT"

python3 - <<'PY'
import torch
print(f"[gpu_run] torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
PY
mkdir -p "$OUT_DIR"
python3 -m sgdnoise.sweep "$CONFIG" --out "$OUT_DIR" --order largest-first --no-progress
ls -la "$OUT_DIR"
