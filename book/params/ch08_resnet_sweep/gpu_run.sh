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
# It expands CIFAR-10 from a carried compact copy when needed, runs the preflight
#   python -m sgdnoise.preflight $PLAN     (<= 60 s of checks after loading the data)
# (20 steps of the fast path -- bf16 autocast, channels-last, fused SGD, device RNG -- against
# the eager float32 path from the same initialisation and batches, for the plan's first run
# and one run of each other kind; on an error or a mismatch the plan runs on the eager path,
# and every record says which path produced it in "engine_path"), then
#   sgdnoise-sweep $PLAN --out $RECORDS --budget $BUDGET --engine <fast|eager> [--shard $SHARD]
# (the highest-priority runs of the plan that have no record in $RECORDS yet and fit in the
# budget, their time estimated from throughput measured in this session), packs the records
# it wrote, with this session's log, into ONE tar, $OUT/<name>_records.tar, and prints a
# summary; <name> is the plan's name up to its first '-' (ch08 for plan_full.yaml and
# plan_test.yaml of chapter 8, ch09 for chapter 9's plans); a plan name other than letters,
# digits, '.', '_' and '-' is refused. Unpack the tar into $RECORDS and commit (see
# data/results/ch08/README.md or data/results/ch09/README.md). Every value reaches Python as
# a command-line argument, never as source text.
#
# Device time: the preflight (data loading + <= 60 s of checks; stopped after
# PREFLIGHT_LIMIT s, default 180, which means the eager path) + BUDGET + at most GRACE.
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
#   PREFLIGHT_INJECT=error|mismatch  force the preflight's fast path to fail (tests of the
#            fallback); PREFLIGHT_LIMIT: seconds before the preflight is stopped (180)
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
# numbers are checked before any arithmetic sees them (bash arithmetic would expand a
# subscript such as a[$(cmd)])
for v in BUDGET GRACE CONCURRENT PREFLIGHT_LIMIT; do
  val="${!v:-1}"
  if ! [[ "$val" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { [ "$v" = CONCURRENT ] && ! [[ "$val" =~ ^[1-9][0-9]*$ ]]; }; then
    echo "[gpu_run] error: $v must be a number of seconds (CONCURRENT: an integer >= 1), got ${val@Q}" >&2
    exit 2
  fi
done

# the plan's data set and name, the plan path passed as an argument (never as source)
PLAN_INFO="$("$PY" - "$PLAN" <<'PY'
import sys

from sgdnoise.sweep import PlanError, load_plan

try:
    p = load_plan(sys.argv[1], check_device=False)
except PlanError as err:  # a refused plan is a usage error: exit 2, as the sweep's own
    print(f"[gpu_run] error: {err}", file=sys.stderr)
    sys.exit(2)
print(p.data["dataset"])
print(p.name)
PY
)"
DATASET="$(sed -n 1p <<< "$PLAN_INFO")"
PLAN_NAME="$(sed -n 2p <<< "$PLAN_INFO")"
if ! [[ "$PLAN_NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || [ "$(wc -l <<< "$PLAN_INFO")" -ne 2 ]; then
  echo "[gpu_run] error: the plan's name must be letters, digits, '.', '_' and '-' (it names" \
       "the tar), got ${PLAN_NAME@Q}" >&2
  exit 2
fi
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
# the preflight: fast path against eager on this device; no choice (crash, time-out) means
# the eager path, the safe one; exit code 3 means neither path runs: no sweep
timeout --signal=TERM --kill-after=10 "${PREFLIGHT_LIMIT:-180}" \
  "$PY" -m sgdnoise.preflight "$PLAN" --choice-file "$WORK/engine.txt" \
  ${PREFLIGHT_INJECT:+--inject "$PREFLIGHT_INJECT"} 2>&1 | tee -a "$LOG"
PF_RC=${PIPESTATUS[0]}
ENGINE="$(cat "$WORK/engine.txt" 2>/dev/null)"
case "$ENGINE" in
  fast|eager) ;;
  *) ENGINE=eager
     echo "[gpu_run] the preflight made no choice (exit code $PF_RC): the eager path" | tee -a "$LOG" ;;
esac
echo "[gpu_run] engine path: $ENGINE" | tee -a "$LOG"
# a hard stop GRACE seconds after the budget (default 60), so the tar below is always made
# (a run cut short leaves no record and is rerun by a later session; no checkpoints are
# written, since the machine's disk ends with the session)
LIMIT="$(( ${BUDGET%.*} + ${GRACE:-60} ))"
if [ "$PF_RC" -eq 3 ]; then
  echo "[gpu_run] neither the fast nor the eager path runs on this device: no sweep" | tee -a "$LOG"
  RC=3
elif [ "${CONCURRENT:-1}" -gt 1 ]; then
  # K processes share the device, process i running shard i/K (round-robin in priority
  # order, so each gets its share of the urgent runs); each measures its own throughput
  # while the others run, so its budget estimates include the sharing
  PIDS=()
  for ((i = 0; i < CONCURRENT; i++)); do
    timeout --signal=TERM --kill-after=10 "$LIMIT" \
      "$PY" -m sgdnoise.sweep "$PLAN" --out "$RECORDS" --budget "$BUDGET" --no-checkpoints \
      --engine "$ENGINE" --shard "$i/$CONCURRENT" > "$WORK/shard_$i.log" 2>&1 &
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
    --engine "$ENGINE" ${SHARD:+--shard "$SHARD"} 2>&1 | tee -a "$LOG"
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
