#!/usr/bin/env bash
# One-call GPU check of tritonobs (H200 or any CUDA GPU) on a bare machine, under 6 minutes:
#   offline install of the carried wheels, versions recorded (torch, Triton, driver, GPU), every
#   kernel variant precompiled in parallel, CUDA tests with the real Triton compiler (kernels vs
#   torch references, every forward under torch.cuda.set_sync_debug_mode("error"), > 2**31
#   elements, a 300-launch handoff stress, CUDA-graph replay vs eager), then the gpu_check
#   benchmark profile; ONE JSON of results.
#
# Usage:  benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--jobs N] [OUTPUT.json]
#   Writes $OUT/gpu_check.json when $OUT is set, else OUTPUT.json.
#   --dry-run: the same steps on CPU (wheel install, variant recording and two sm_90 compiles,
#   Triton interpreter on tiny shapes, no sync-debug, no CUDA-only tests).
#
# Needs on the machine (nothing is downloaded): python3 with pip, torch (CUDA build), triton,
# numpy. pytest, pytest-benchmark and setuptools come from the wheel folder, .wheels/ by default:
# fill it once with benchmarks/fetch_wheels.sh where PyPI is reachable; the device call carries it
# (carry: [".wheels"]). The wheels go to a private folder first on the children's PYTHONPATH, so
# the machine's own packages are left as they are; this checkout is installed editable (no deps,
# no index) when it is not the importable tritonobs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/gpu_check.py "$@"
