#!/usr/bin/env bash
# One-call GPU check of tritonobs (H200 or any CUDA GPU), under 6 minutes:
#   CUDA tests with the real Triton compiler (kernels vs torch references, every observer's forward
#   under torch.cuda.set_sync_debug_mode("error"), CUDA-graph capture/replay vs eager), then the
#   benchmark subset of issue 4; ONE JSON of results, GPU named inside.
#
# Usage:  benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [OUTPUT.json]
#   Writes $OUT/gpu_check.json when $OUT is set, else OUTPUT.json.
#   --dry-run: the same steps on CPU (Triton interpreter, tiny shapes, no sync-debug, no graphs).
#
# Needs on the machine (nothing is downloaded): python3 with torch (CUDA build), triton, numpy,
# pytest. pytest-benchmark (+ py-cpuinfo) for the benchmarks: if it is missing, carry its wheels
# (`pip download pytest-benchmark py-cpuinfo -d wheels/`) and pass --wheels wheels/; without it
# the tests still run and the JSON says the benchmarks were skipped. matplotlib is not needed.
# If tritonobs is not installed there, the script runs `pip install --no-deps -e .` (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/gpu_check.py "$@"
