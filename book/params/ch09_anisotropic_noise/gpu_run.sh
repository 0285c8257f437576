#!/usr/bin/env bash
# The one command a GPU session runs for chapter 9: chapter 8's gpu_run.sh (see its header
# for every setting) with chapter 9's plan and records folder as defaults,
#
#   SGDNOISE_GIT_COMMIT=<sha> bash book/params/ch09_anisotropic_noise/gpu_run.sh
#
# = PLAN=book/params/ch09_anisotropic_noise/plan_full.yaml RECORDS=data/results/ch09
#   bash book/params/ch08_resnet_sweep/gpu_run.sh: the preflight (fast path against eager
#   float32 on the device; on an error or mismatch the plan runs on the eager path), then the
#   budgeted sweep; the new records arrive as $OUT/ch09_records.tar (default ./gpu_out), to
#   unpack into data/results/ch09/. The settings travel as environment variables and reach
#   Python only as command-line arguments.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PLAN="${PLAN:-book/params/ch09_anisotropic_noise/plan_full.yaml}"
export RECORDS="${RECORDS:-data/results/ch09}"
exec bash book/params/ch08_resnet_sweep/gpu_run.sh "$@"
