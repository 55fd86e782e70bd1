"""Order independence of the multi-program kernels that ``tests/test_program_order.py`` leaves out.

Each op runs once with the interpreter's programs in order, then with every launch's programs in
a shuffled order (:func:`tests.program_order.shuffled_programs`, several seeds); the results must
be bit-identical. The kernels whose programs share memory: ``histogram_rebin``'s scatter adds
float64 parts into shared bins with atomics, ``histc`` and ``amax_histogram_update`` count with
atomics after a pre-pass whose per-program partials the counting launch reduces (there every program
takes the growth decision, program 0 records it). The others write disjoint outputs; a program that
read another's output or a shared scratch buffer would show here.

Not here: ``histogram_search`` (one program per launch).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.program_order import shuffled_programs
from tritonobs.backend import use_backend

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

SEEDS = (1, 2, 3)
_INTS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (NaN payloads and signed zeros included)."""
    return t.view(_INTS[t.element_size()])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def _histogram_rebin(point: bool) -> Callable[[], torch.Tensor]:
    # 2048 fractional counts: 16 scatter programs. A single-point old range sends every
    # program's block sum to one bin.
    def run() -> torch.Tensor:
        histogram = torch.rand(2048, generator=_generator(1)) * 100
        orig = (_scalar(0.3), _scalar(0.3)) if point else (_scalar(-1.0), _scalar(1.5))
        return torch.ops.tritonobs.histogram_rebin(
            histogram, *orig, _scalar(-2.0), _scalar(3.0), 16
        )

    return run


def _histc(own_range: bool) -> Callable[[], torch.Tensor]:
    # 19065 elements: 10 programs. lo == hi takes the range from the pre-pass's partials.
    def run() -> torch.Tensor:
        x = torch.randn(5, 123, 31, generator=_generator(2))
        x.view(-1)[[7, 4000, 19000]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        lo, hi = (_scalar(0.0), _scalar(0.0)) if own_range else (_scalar(-1.5), _scalar(2.0))
        return torch.ops.tritonobs.histc(x, lo, hi, 37)

    return run


def _amax_histogram_update() -> torch.Tensor:
    # 19065 elements: 10 programs; a first batch, then a growth to 3 x 64 bins with NaN/inf.
    # 4097 edges: 5 programs write them.
    histogram, edges = torch.zeros(4096), torch.zeros(4097)
    counters = [torch.zeros((), dtype=torch.int64) for _ in range(3)]
    x = torch.randn(5, 123, 31, generator=_generator(10))
    for batch in (x, x * 3):
        batch.view(-1)[[7, 4000, 19000]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        torch.ops.tritonobs.amax_histogram_update(batch, histogram, edges, *counters, 64, False)
    return torch.cat(
        [histogram.view(torch.int32).long(), edges.view(torch.int32).long(), torch.stack(counters)]
    )


def _quantization_error() -> torch.Tensor:
    # 50 candidates: 7 programs.
    histogram = torch.rand(301, generator=_generator(3)) * 50
    starts = torch.randint(0, 150, (50,), generator=_generator(4))
    ends = starts + torch.randint(0, 150, (50,), generator=_generator(5))
    return torch.ops.tritonobs.quantization_error(
        histogram, _scalar(-2.0), _scalar(2.5), starts, ends, 16
    )


def _entropy_divergence() -> torch.Tensor:
    # 201 cuts: 13 programs.
    counts = torch.randint(0, 60, (300,), generator=_generator(6))
    counts[torch.rand(300, generator=_generator(7)) < 0.5] = 0
    return torch.ops.tritonobs.entropy_divergence(counts, 100, 1, 128)


def _histogram_mse(fp8: bool) -> Callable[[], torch.Tensor]:
    # 62 cuts: 8 programs.
    def run() -> torch.Tensor:
        counts = torch.randint(0, 100, (123,), generator=_generator(8)).float()
        centers = torch.linspace(0.0, 3.7, 123)
        return torch.ops.tritonobs.histogram_mse(counts, centers, 0, 2, 8, False, fp8)

    return run


def _weight_mse_sweep(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    # 5 groups x 3 steps: 15 programs.
    def run() -> torch.Tensor:
        x = (torch.randn(5, 70, generator=_generator(9)) * 0.05).to(dtype)
        scales = torch.stack([x.abs().amax(-1).float() / 7 * p for p in (1.0, 0.95, 0.9)])
        zero_points = torch.full_like(scales, 8.0)
        return torch.ops.tritonobs.weight_mse_sweep(x, scales, zero_points, 4, False, False, 2.4)

    return run


CASES: dict[str, Callable[[], torch.Tensor]] = {
    "histogram_rebin": _histogram_rebin(point=False),
    "histogram_rebin_single_point": _histogram_rebin(point=True),
    "histc": _histc(own_range=False),
    "histc_own_range": _histc(own_range=True),
    "amax_histogram_update": _amax_histogram_update,
    "quantization_error": _quantization_error,
    "entropy_divergence": _entropy_divergence,
    "histogram_mse_int8": _histogram_mse(fp8=False),
    "histogram_mse_fp8": _histogram_mse(fp8=True),
    "weight_mse_sweep_fp32": _weight_mse_sweep(torch.float32),
    "weight_mse_sweep_bf16": _weight_mse_sweep(torch.bfloat16),
}


@pytest.mark.parametrize("case", CASES)
def test_result_is_independent_of_program_order(case: str) -> None:
    with use_backend("triton"):
        expected = CASES[case]()
        for seed in SEEDS:
            with shuffled_programs(seed) as grids:
                got = CASES[case]()
            assert grids and max(grids) > 1, grids
            assert torch.equal(_bits(got), _bits(expected)), (seed, got, expected)
