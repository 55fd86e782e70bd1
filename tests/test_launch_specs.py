"""What the observers and ops launch is what ``tests/compile_sm90.py`` compiles.

Under the interpreter every Triton launch of a set of workloads (every input dtype, per tensor and
per channel on each axis, HistogramObserver's first batch / growing range / same range and its
search, AmaxHistogramObserver's first batch / growth / no growth, ``histc``, ``histogram_rebin``,
``quantization_error`` and the entropy / MSE / weight sweeps) is recorded as (kernel, compile
options, pointer dtypes). Each must match a ``COMPILE_SPECS`` entry of its module exactly: a launch
whose options differ from every spec's (an ``enable_fp_fusion`` dropped from one launch), or a
pointer dtype no spec compiles (float64 inputs), fails here. Every launch must also pin
``enable_fp_fusion=False``.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator

import pytest
import torch
from triton.runtime.jit import KernelInterface

import tritonobs
import tritonobs.kernels
import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.test_entropy_divergence import make_counts
from tests.test_histogram_mse import make_histogram
from tests.test_weight_mse_sweep import make_case
from tritonobs.backend import use_backend
from tritonobs.kernels.histc import LOCAL_HIST_MAX_BINS

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
TRITON_TYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
}

Key = tuple[str, tuple[tuple[str, object], ...], tuple[tuple[str, str], ...]]


def _key(kernel: str, options: dict, pointers: dict[str, str]) -> Key:
    return kernel, tuple(sorted(options.items())), tuple(sorted(pointers.items()))


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Key]]:
    """Within the block, every ``kernel[grid](...)`` runs and is recorded as a :data:`Key`."""
    launches: list[Key] = []
    original = KernelInterface.__getitem__

    def recorder(self, grid):
        launch = original(self, grid)

        def run(*args, **kwargs):
            named = dict(zip(self.arg_names, args, strict=False)) | kwargs
            options = {k: v for k, v in named.items() if k not in self.arg_names}
            pointers = {
                k: TRITON_TYPES[v.dtype] for k, v in named.items() if isinstance(v, torch.Tensor)
            }
            launches.append(_key(self.fn.__name__, options, pointers))
            return launch(*args, **kwargs)

        return run

    KernelInterface.__getitem__ = recorder
    try:
        yield launches
    finally:
        KernelInterface.__getitem__ = original


def _spec_keys() -> set[Key]:
    keys = set()
    for info in pkgutil.iter_modules(tritonobs.kernels.__path__):
        module = importlib.import_module(f"tritonobs.kernels.{info.name}")
        for fn, signature, _constexprs, options in getattr(module, "COMPILE_SPECS", []):
            pointers = {a: t[1:] for a, t in signature.items() if t.startswith("*")}
            keys.add(_key(fn.fn.__name__, options, pointers))
    return keys


def _observers(x: torch.Tensor) -> None:
    tritonobs.MinMaxObserver()(x)
    ema = tritonobs.MovingAverageMinMaxObserver()
    ema(x)
    ema(x * 2)
    for axis in range(x.dim()):
        tritonobs.PerChannelMinMaxObserver(ch_axis=axis)(x)
        tritonobs.MovingAveragePerChannelMinMaxObserver(ch_axis=axis)(x.transpose(0, -1))
    histogram = tritonobs.HistogramObserver(bins=64)
    for batch in (x, x * 3, x):  # first batch, growing range, same range
        histogram(batch)
    histogram.calculate_qparams()
    amax = tritonobs.AmaxHistogramObserver(bins=64)
    for batch in (x, x * 3, x):  # first batch, growth, no growth
        amax(batch)


def _ops(x: torch.Tensor) -> None:
    lo, hi = torch.tensor(-1.0), torch.tensor(1.5)
    for bins in (77, LOCAL_HIST_MAX_BINS + 1):
        torch.ops.tritonobs.histc(x, lo, hi, bins)
    torch.ops.tritonobs.histc(x, hi, hi, 16)  # lo == hi: the range of x


def _sweeps() -> None:
    histogram = torch.arange(40.0) % 7
    scalars = (torch.tensor(-1.0), torch.tensor(2.0))
    torch.ops.tritonobs.histogram_rebin(histogram, *scalars, torch.tensor(-3.0), scalars[1], 4)
    bins = torch.tensor([0, 3, 5]), torch.tensor([39, 30, 20])
    torch.ops.tritonobs.quantization_error(histogram, *scalars, *bins, 16)
    torch.ops.tritonobs.entropy_divergence(make_counts("dense", 40), 8, 3, 8)
    counts, centers = make_histogram(50)
    for fp8 in (False, True):
        torch.ops.tritonobs.histogram_mse(counts, centers, 5, 3, 8, False, fp8)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for fmt in ((8, False, True), (4, False, False), (8, True, True)):
            weights, scales, zero_points = make_case(dtype, fmt, rows=3, n=20)
            torch.ops.tritonobs.weight_mse_sweep(weights, scales, zero_points, *fmt, 2.4)


@pytest.fixture(scope="module")
def launches() -> list[Key]:
    g = torch.Generator().manual_seed(0)
    with use_backend("triton"), recorded_launches() as recorded:
        for dtype in DTYPES:
            x = (torch.randn(5, 6, 7, generator=g) * 2).to(dtype)
            _observers(x)
            _ops(x)
        _sweeps()
    return recorded


def test_every_launch_is_compiled_by_a_spec(launches):
    missing = sorted(set(launches) - _spec_keys())
    assert missing == [], "launched but compiled by no COMPILE_SPECS entry:\n" + "\n".join(
        map(str, missing)
    )


def test_every_launch_pins_fp_fusion_off(launches):
    assert [key for key in launches if ("enable_fp_fusion", False) not in key[1]] == []


def test_the_workloads_launch_every_kernel(launches):
    """So that the check above covers every kernel that has a spec, in every input dtype that
    reaches the streaming kernels."""
    assert {key[0] for key in launches} == {key[0] for key in _spec_keys()}
    streaming = {"_aminmax_kernel", "_histogram_stats_kernel", "_histc_kernel"}
    streaming |= {"_amax_stats_kernel", "_amax_count_kernel"}
    for kernel in streaming | {"_histogram_regrow_kernel"}:
        dtypes = {dict(key[2])["x_ptr"] for key in launches if key[0] == kernel}
        assert dtypes == {"fp32", "fp16", "bf16", "fp64"}, kernel


def test_recorder_sees_options_that_differ_from_the_specs():
    """A launch with options no spec has is reported (the check above is not vacuous)."""
    from tritonobs.kernels import histogram_search

    errors = torch.tensor([3.0, 2.0])
    bounds = torch.tensor([[0, 1], [5, 4]])
    state = (
        torch.tensor(float("inf")),
        torch.zeros(2, dtype=torch.int64),
        torch.zeros((), dtype=torch.int32),
    )
    with recorded_launches() as recorded:
        histogram_search._histogram_search_kernel[(1,)](
            errors, bounds, 2, *state, BLOCK=histogram_search.BLOCK, num_warps=4
        )
    assert recorded and set(recorded).isdisjoint(_spec_keys())
