#!/usr/bin/env bash
# The one command a GPU session runs for chapter 8 (from a plain copy of the repository, no
# install, no .git needed):
#
#   SGDNOISE_GIT_COMMIT=<sha> bash book/params/ch08_resnet_sweep/gpu_run.sh
#
# and, with PLAN and RECORDS set, for any other plan, e.g. chapter 9's:
#
#   PLAN=book/params/ch09_anisotropic_noise/plan_full.yaml RECORDS=data/results/ch09 \
#     bash book/params/ch08_resnet_sweep/gpu_run.sh
#
# It expands CIFAR-10 from a carried compact copy when needed, runs
#   sgdnoise-sweep $PLAN --out $RECORDS --budget $BUDGET [--shard $SHARD]
# (the highest-priority runs of the plan that have no record in $RECORDS yet and fit in the
# budget, their time estimated from throughput measured in this session), packs the records
# it wrote, with this session's log, into ONE tar, $OUT/<name>_records.tar, and prints a
# summary; <name> is the plan's name up to its first '-' (ch08 for plan_full.yaml and
# plan_test.yaml of chapter 8, ch09 for chapter 9's plans). Unpack the tar into $RECORDS and
# commit (see data/results/ch08/README.md or data/results/ch09/README.md).
#
# Settings (environment):
#   PLAN     plan file (default book/params/ch08_resnet_sweep/plan_full.yaml; the tiny CPU
#            plan_test.yaml tries the script on a laptop)
#   RECORDS  records folder (default data/results/ch08: records already there are skipped)
#   BUDGET   seconds for the sweep (default 480); GRACE: hard stop this much later (60)
#   SHARD    i/n to run one share of the plan (default: all)
#   CONCURRENT=K  K sweep processes on the one device, shards 0/K .. K-1/K (SHARD ignored):
#            small-batch runs leave most of a large GPU idle
#   OUT      where the tar goes (default ./gpu_out)
#   BENCH=1  first run benchmarks/bench_gpu_engine.py (its time is not in BUDGET)
#   SGDNOISE_GIT_COMMIT  the commit the copy was made from (recorded in every record when
#            there is no .git; a GIT_COMMIT file at the repository root also works)
# CIFAR-10: read from $SGDNOISE_DATA or data/cifar-10-batches-py; when missing, expanded from
# the compact copy (cifar10_jpeg_streams.npz + expand.py) found in $CIFAR_COMPACT_DIR,
# .device/cifar10, shared/data/cifar10 or ../shared/data/cifar10.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PLAN="${PLAN:-book/params/ch08_resnet_sweep/plan_full.yaml}"
RECORDS="${RECORDS:-data/results/ch08}"
BUDGET="${BUDGET:-480}"
OUT_DIR="${OUT:-./gpu_out}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -z "${SGDNOISE_GIT_COMMIT:-}" ] && git rev-parse HEAD >/dev/null 2>&1; then
  SGDNOISE_GIT_COMMIT="$(git rev-parse HEAD)"
fi
export SGDNOISE_GIT_COMMIT="${SGDNOISE_GIT_COMMIT:-}"

PLAN_INFO="$("$PY" -c "from sgdnoise.sweep import load_plan
p = load_plan('$PLAN', check_device=False)
print(p.data['dataset'], p.name)")"
read -r DATASET PLAN_NAME <<< "$PLAN_INFO"
TAR="${PLAN_NAME%%-*}_records.tar"
if [ "$DATASET" = "cifar10" ]; then
  DATA_ROOT="${SGDNOISE_DATA:-$PWD/data}"
  if [ ! -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ]; then
    for d in "${CIFAR_COMPACT_DIR:-}" .device/cifar10 shared/data/cifar10 ../shared/data/cifar10; do
      if [ -n "$d" ] && [ -f "$d/expand.py" ] && [ -f "$d/cifar10_jpeg_streams.npz" ]; then
        echo "[gpu_run] expanding CIFAR-10 from $d"
        "$PY" "$d/expand.py" "$DATA_ROOT"
        break
      fi
    done
  fi
  if [ ! -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ]; then
    echo "[gpu_run] CIFAR-10 not found (set SGDNOISE_DATA or carry .device/cifar10)" >&2
    exit 2
  fi
  export SGDNOISE_DATA="$DATA_ROOT"
fi

mkdir -p "$OUT_DIR" "$RECORDS"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/session_$STAMP.log"
ls "$RECORDS" > "$WORK/before.txt"
"$PY" - <<'PY' | tee "$LOG"
import torch
print(f"[gpu_run] torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")
PY
if [ "${BENCH:-0}" = "1" ]; then
  "$PY" benchmarks/bench_gpu_engine.py 2>&1 | tee -a "$LOG"
fi
set +e
# a hard stop GRACE seconds after the budget (default 60), so the tar below is always made
# (a run cut short leaves no record and is rerun by a later session; no checkpoints are
# written, since the machine's disk ends with the session)
LIMIT="$(( ${BUDGET%.*} + ${GRACE:-60} ))"
if [ "${CONCURRENT:-1}" -gt 1 ]; then
  # K processes share the device, process i running shard i/K (round-robin in priority
  # order, so each gets its share of the urgent runs); each measures its own throughput
  # while the others run, so its budget estimates include the sharing
  PIDS=()
  for ((i = 0; i < CONCURRENT; i++)); do
    timeout --signal=TERM --kill-after=10 "$LIMIT" \
      "$PY" -m sgdnoise.sweep "$PLAN" --out "$RECORDS" --budget "$BUDGET" --no-checkpoints \
      --shard "$i/$CONCURRENT" > "$WORK/shard_$i.log" 2>&1 &
    PIDS+=("$!")
  done
  RC=0
  for i in "${!PIDS[@]}"; do
    wait "${PIDS[$i]}" || RC=$?
    sed "s/^/[shard $i\/$CONCURRENT] /" "$WORK/shard_$i.log" | tee -a "$LOG"
  done
else
  timeout --signal=TERM --kill-after=10 "$LIMIT" \
    "$PY" -m sgdnoise.sweep "$PLAN" --out "$RECORDS" --budget "$BUDGET" --no-checkpoints \
    ${SHARD:+--shard "$SHARD"} 2>&1 | tee -a "$LOG"
  RC=${PIPESTATUS[0]}
fi
set -e
ls "$RECORDS" > "$WORK/after.txt"
mkdir -p "$WORK/pack/sessions"
cp "$LOG" "$WORK/pack/sessions/"
comm -13 "$WORK/before.txt" "$WORK/after.txt" | grep '\.json$' > "$WORK/new.txt" || true
while read -r f; do cp "$RECORDS/$f" "$WORK/pack/"; done < "$WORK/new.txt"
tar -cf "$OUT_DIR/$TAR" -C "$WORK/pack" .
echo "[gpu_run] sweep exit code $RC; $(wc -l < "$WORK/new.txt") new record(s) packed into $OUT_DIR/$TAR"
"$PY" - "$WORK/pack" <<'PY'
import sys

from sgdnoise.sweep import load_records

df = load_records(sys.argv[1])
if len(df):
    last = df.sort_values("step").groupby("run_id").tail(1).sort_values("run_id")
    for _, r in last.iterrows():
        print(f"[gpu_run] {r['run_id']:<22} {r['status']:<9} step {int(r['step']):>6} "
              f"epoch {r['epoch']:7.2f} train err {r['train_error']:.3f} "
              f"test err {r['test_error']:.3f}")
PY
exit "$RC"
