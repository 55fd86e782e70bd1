#!/usr/bin/env bash
# Fill .wheels/ (git-ignored) with what benchmarks/gpu_check.sh installs on a machine with no
# network: pytest, pytest-benchmark, setuptools and their dependencies, all pure Python
# (py3-none-any), pinned, for the Python 3.12 of the GPU machine. Run it once where pip reaches
# PyPI; the device call then carries the folder (carry: [".wheels"]), about 3 MB.
#
# Usage:  benchmarks/fetch_wheels.sh [DIR]   (default: .wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.wheels}"
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation py --abi none --platform any \
    --dest "$dest" \
    pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 packaging==26.2 pygments==2.20.0 \
    pytest-benchmark==5.2.3 py-cpuinfo==9.0.0 \
    setuptools==84.2.1
ls -1 "$dest"
