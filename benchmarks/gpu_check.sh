#!/usr/bin/env bash
# The GPU check of the world-model methods (issue 19): short CMIL runs on cuda from states and
# from pixels and a V-MAIL run from states, then updates/s at the reference sizes with and without each speed switch
# (amp_bf16, compile) and the peak device memory, all in one JSON file. Ends within 5 minutes on
# one GPU (270 s budget; steps left when it is spent are recorded as skipped). Without a GPU it
# runs the CPU fallback: tiny sizes, the same JSON layout, "device": "cpu".
#
#   benchmarks/gpu_check.sh [OUT.json] [extra gpu_check.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
shift || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL="${MUJOCO_GL:-egl}"
exec timeout 300 python benchmarks/gpu_check.py --out "$out" --device auto "$@"
