"""Shared fixtures: the backend under test, shapes, input dtypes and the tolerance table.

A test that takes the ``backend`` fixture runs once per backend. Its ``[triton]`` run counts the
Triton kernels the interpreter really ran (:func:`interpreted_launches`) and fails if there were
none: a Triton test that silently takes the torch reference proves nothing about the kernels.
Cases that launch nothing by design (the launcher takes the torch reference, there is nothing to
compute, or an error comes first) are marked ``@pytest.mark.fallback(reason)`` and must then launch
nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from tritonobs.backend import use_backend

# Tolerances, in one place, for the results whose arithmetic differs from the reference, each with
# its cause and, for the interpreter, the largest difference measured (issue 13). Everything else
# (min/max, EMA, histograms and HistogramObserver qparams on the interpreter, the search's chosen
# bins, the distributed merges of min/max and histograms) is compared with atol=0, rtol=0.
TOLERANCES: dict[str, dict[str, float]] = {
    # HistogramObserver's histogram after the range grew, against a reference that re-bins in
    # another order (a GPU vs CPU torch.ao; the op vs its torch reference).
    "histogram_rebinned": {"atol": 1e-3, "rtol": 1e-5},
    # HistogramObserver after the range grew, Triton vs CPU torch.ao: sum(|ours - ao|) / sum(ao).
    # Triton computes linspace as torch's CUDA kernel does; CPU torch rounds it in another order,
    # so a sub-bin mid-point within an ulp of an edge can land in the neighbouring bin.
    "histogram_rebinned_mass": {"atol": 0.0, "rtol": 1e-3},
    # histogram_rebin of fractional counts, Triton vs CPU torch.ao: the linspace above, and float64
    # sums rounded once instead of torch.ao's float32 bincount. Measured 6.2e-5 of the mass.
    "histogram_rebinned_fractional_mass": {"atol": 0.0, "rtol": 1e-4},
    # HistogramObserver qparams after range growth, GPU vs CPU torch.ao (tests/test_cuda.py).
    "histogram_scale": {"atol": 0.0, "rtol": 1e-3},
    "histogram_zero_point": {"atol": 1.0, "rtol": 0.0},
    # Quantization-error values of the sweep on a GPU (tests/test_cuda.py): fp32 sums in another
    # order.
    "quantization_error": {"atol": 0.0, "rtol": 1e-4},
    # The same in the interpreter (a tree sum vs torch.ao's sum), for histograms with two or more
    # non-empty bins (one term per sum is exact). Measured 2.1e-7 (under 2 float32 ulps).
    "quantization_error_interpreter": {"atol": 0.0, "rtol": 3e-7},
    # sync_observers: merged moving average vs the moving average of the rank-averaged batch
    # min/max (equal in exact arithmetic; float32 rounds in another order). Measured 1 ulp.
    "ema_merged": {"atol": 0.0, "rtol": 2.0**-23},
}

# Small but awkward shapes for interpreter tests (odd sizes, size 1).
SHAPES = [(1,), (7,), (5, 123), (3, 1, 17), (2, 3, 5, 7), (1, 1)]
INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]

_LAUNCHES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fallback(reason): the [triton] case launches no Triton kernel, by design (the reason)",
    )


@contextlib.contextmanager
def interpreted_launches() -> Iterator[list[str]]:
    """Within the block, the name of every kernel the interpreter runs is appended to the list.

    Counts launches that run (a stubbed launch, :func:`tritonobs.hostpath.stub_triton_launches`,
    never reaches the interpreter).
    """
    from triton.runtime import interpreter

    executor = interpreter.GridExecutor
    original = executor.__call__
    launched: list[str] = []

    def run(self, *args, **kwargs):
        launched.append(self.fn.__name__)
        return original(self, *args, **kwargs)

    executor.__call__ = run
    try:
        yield launched
    finally:
        executor.__call__ = original


@pytest.fixture(params=["torch", "triton"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once with the torch reference and once with the Triton kernels (interpreter)."""
    with use_backend(request.param):
        if request.param == "torch":
            yield request.param
            return
        with interpreted_launches() as launched:
            request.node.stash[_LAUNCHES] = launched
            yield request.param


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A passing ``[triton]`` test must have launched a kernel, or be marked ``fallback``."""
    result = yield
    launched = item.stash.get(_LAUNCHES, None)
    if launched is None:
        return result
    fallback = item.get_closest_marker("fallback")
    if fallback is not None:
        if not fallback.args:
            pytest.fail(
                "fallback needs a reason: why the [triton] case launches nothing", pytrace=False
            )
        if launched:
            pytest.fail(f"marked fallback, yet launched {sorted(set(launched))}", pytrace=False)
    elif not launched:
        pytest.fail(
            "the [triton] case launched no Triton kernel: mark it fallback if that is by design",
            pytrace=False,
        )
    return result
