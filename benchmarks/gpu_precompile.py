"""Compile, in parallel and before the GPU check's tests and benchmarks, every kernel variant they launch.

1. **Record.** Each launcher runs on the shapes, dtypes and layouts of ``tests/test_cuda.py`` (its
   constants) and of the ``gpu_check`` benchmark profile, with Triton's ``jit_cache_hook`` set: at
   each variant not yet compiled the hook keeps Triton's own serialisation of it (the
   ``specialization_data`` that ``JITFunction.preload`` takes) and returns True, which skips the
   compile and the launch. So recording takes seconds, and the variants are exactly those the
   runtime would compile (the launchers' own specialisation: dtypes, divisibility, constants).
2. **Compile.** A process pool, one worker per core, preloads each variant: ``JITFunction.preload``
   runs ``triton.compile`` into Triton's on-disk cache, where the test and benchmark processes find
   it; on the GPU the worker then loads the kernel (``_init_handles``), which also builds and caches
   the launcher that Triton versions before 3.7 compile per signature.

``--dry-run`` (no GPU): the launchers run on CPU tensors with the compile-only driver for sm_90
standing in for CUDA, the first :data:`DRY_RUN_COMPILES` variants are compiled and the rest counted.

Run it with ``TRITON_INTERPRET=0``. Prints one JSON object: variants per kernel, compiled, skipped,
failures, seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The dry run compiles this many variants (the others are counted): the path, not the volume.
DRY_RUN_COMPILES = 2
DRY_RUN_TARGET = {"backend": "cuda", "arch": 90, "warp_size": 32}


class CompileOnlyDriver:
    """What Triton's JIT asks of a driver to compile (not launch) for ``target``: no GPU needed."""

    def __init__(self, target: dict[str, Any]) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget(**target)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


def use_compile_only_driver(target: dict[str, Any]) -> None:
    """Make Triton compile for ``target`` in this process, whatever device it has."""
    from triton.runtime import driver

    driver.set_active(CompileOnlyDriver(target))


def workloads(device: Any) -> Iterator[tuple[str, Callable[[], object]]]:
    """``(name, call)`` of every launch shape the CUDA tests and the gpu_check benchmarks make.

    Inputs are uninitialised: recording launches nothing, so only shapes, strides and dtypes count.
    """
    import torch

    import tritonobs
    from tests import test_cuda as cuda_tests
    from tritonobs.bench import get_profile

    ops = torch.ops.tritonobs
    profile = get_profile("gpu_check" if device.type == "cuda" else "gpu_check_dry")
    shapes = dict.fromkeys([*cuda_tests.SHAPES, *profile.sizes])
    dtypes = dict.fromkeys([*cuda_tests.DTYPES, *profile.dtypes])

    def state(channels: int | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(device) for t in cuda_tests.unset(channels))

    def histogram_state() -> list[torch.Tensor]:
        return [torch.zeros(2048, device=device), *state()]

    lo, hi = (torch.tensor(b, device=device) for b in (-1.0, 1.0))
    for shape in shapes:
        for dtype in dtypes:
            x = torch.empty(shape, dtype=dtype, device=device)
            label = f"{tuple(shape)} {dtype}"
            for view in (x, x.transpose(0, -1)):
                for constant in (None, 0.01):
                    yield f"aminmax {label}", lambda v=view, a=constant: ops.aminmax(v, *state(), a)
                    for axis in [*range(view.dim()), -1]:
                        yield (
                            f"aminmax_per_channel {label} axis {axis}",
                            lambda v=view, d=axis, a=constant: ops.aminmax_per_channel(
                                v, d, *state(v.shape[d]), a
                            ),
                        )
            for bins in (256, 2048):
                yield f"histc {label} {bins}", lambda v=x, b=bins: ops.histc(v, lo, hi, b)
            yield (
                f"histogram_update {label}",
                lambda v=x: ops.histogram_update(v, *histogram_state(), 16),
            )
            for name, kwargs in cuda_tests.OBSERVERS:

                def observe(v=x, name=name, kwargs=kwargs) -> None:
                    observer = getattr(tritonobs, name)(**kwargs).to(device)
                    observer(v)
                    observer(v * 2)
                    observer.calculate_qparams()

                yield f"{name} {kwargs} {label}", observe
    histogram = histogram_state()[0]
    yield "histogram_rebin", lambda: ops.histogram_rebin(histogram, lo, hi, lo * 2, hi * 2, 16)
    yield "histogram_search", lambda: ops.histogram_search(histogram, lo, hi, 256)
    start = torch.arange(0, 1000, 7 if device.type == "cuda" else 97, device=device)
    yield (
        "quantization_error",
        lambda: ops.quantization_error(histogram, lo, hi, start, 2047 - start.flip(0), 256),
    )
    for shape, axis in cuda_tests.STRESS_INPUTS:
        x = torch.empty(shape, dtype=torch.bfloat16, device=device)
        if axis is None:
            yield f"stress {shape}", lambda v=x: ops.aminmax(v, *state(), None)
        else:
            yield (
                f"stress {shape} axis {axis}",
                lambda v=x, d=axis: ops.aminmax_per_channel(v, d, *state(v.shape[d]), None),
            )
    if device.type == "cuda":
        big = torch.empty(cuda_tests.BIG_NUMEL, dtype=torch.float16, device=device)
        yield "aminmax over 2**31 elements", lambda: ops.aminmax(big, *state(), None)


def record(device: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The variants the workloads would compile, and the workloads that raised while recording.

    Returns:
        One ``{"module", "name", "data"}`` per variant (``data``: Triton's specialisation JSON),
        and one line per workload that failed (it then compiles during the tests).
    """
    from triton import knobs

    from tritonobs.backend import use_backend

    variants: dict[str, dict[str, Any]] = {}

    def hook(*, fn: Any, compile: dict[str, Any], **_: Any) -> bool:
        data = compile["specialization_data"]
        variants.setdefault(data, {"module": fn.module, "name": fn.name, "data": data})
        return True

    errors = []
    knobs.runtime.jit_cache_hook = hook
    try:
        # Nothing runs, so observers warn that they saw nothing.
        with use_backend("triton"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, call in workloads(device):
                try:
                    call()
                except Exception as error:  # reported; the tests compile what it missed
                    errors.append(f"{name}: {type(error).__name__}: {error}".splitlines()[0])
    finally:
        knobs.runtime.jit_cache_hook = None
    return list(variants.values()), errors


def compile_variant(variant: dict[str, Any], on_device: bool) -> tuple[str, float, str | None]:
    """Compile one recorded variant into Triton's cache (in a pool worker).

    Args:
        variant: from :func:`record`.
        on_device: load the compiled kernel on the GPU too; else compile only, for the recorded
            target, with no GPU.

    Returns:
        ``(kernel name, seconds, error or None)``.
    """
    start = time.perf_counter()
    try:
        if not on_device:
            use_compile_only_driver(json.loads(variant["data"])["target"])
        kernel = getattr(importlib.import_module(variant["module"]), variant["name"])
        compiled = kernel.preload(variant["data"])
        if on_device:
            compiled._init_handles()
        error = None
    except Exception as failure:  # reported; the tests compile it instead
        error = f"{type(failure).__name__}: {failure}".splitlines()[0]
    return variant["name"], time.perf_counter() - start, error


def precompile(dry_run: bool, jobs: int) -> dict[str, Any]:
    """Record the variants, then compile them with ``jobs`` processes; the summary."""
    import torch

    start = time.perf_counter()
    if dry_run:
        use_compile_only_driver(DRY_RUN_TARGET)
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
    variants, record_errors = record(device)
    recorded = time.perf_counter()
    chosen = variants[:DRY_RUN_COMPILES] if dry_run else variants
    # spawn: the parent holds a CUDA context, which a forked worker must not inherit.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        results = list(pool.map(functools.partial(compile_variant, on_device=not dry_run), chosen))
    return {
        "variants": len(variants),
        "by_kernel": dict(Counter(v["name"] for v in variants)),
        "compiled": sum(error is None for _, _, error in results),
        "skipped_dry_run": len(variants) - len(chosen),
        "failed": [f"{name}: {error}" for name, _, error in results if error is not None],
        "record_errors": record_errors,
        "jobs": jobs,
        "compile_seconds_each": [round(seconds, 2) for _, seconds, _ in results],
        "record_s": round(recorded - start, 1),
        "compile_s": round(time.perf_counter() - recorded, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU tensors, sm_90, few compiles")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("needs the real compiler: run it with TRITON_INTERPRET=0")
    sys.path.insert(0, str(ROOT))
    summary = precompile(args.dry_run, args.jobs)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
