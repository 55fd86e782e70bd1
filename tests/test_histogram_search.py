"""``tritonobs::histogram_search`` against torch.ao's ``HistogramObserver._non_linear_param_search``.

The chosen range must be bit-identical (same start/end bins, same float32 arithmetic), with the
torch reference and with the Triton kernels under the interpreter. torch.ao's own search is a slow
Python loop, so its answers are computed once per case and shared by both backends.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver as TorchAOHistogramObserver

import tritonobs
import tritonobs.kernels.histogram_search as search_kernels
import tritonobs.ops.histogram_search as search_ops
from tests.conftest import TOLERANCES

EXACT = {"atol": 0.0, "rtol": 0.0}


def _student_t2(n: int, generator: torch.Generator) -> torch.Tensor:
    # Student-t with 2 degrees of freedom: Z / sqrt(chi2_2 / 2), and chi2_2 / 2 ~ Exp(1).
    z = torch.randn(n, generator=generator)
    return z / torch.sqrt(-torch.log(torch.rand(n, generator=generator)))


def make_histogram(kind: str, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float32 histogram of ``bins`` counts and its ``(min_val, max_val)`` (0-d float32).

    Kinds: ``normal``; ``student_t`` (heavy tails); ``relu`` (half the mass at 0); ``spike`` (all
    but 40 values equal); ``empty_ends`` (normal data, empty bins on both sides); ``one_bin`` (all
    mass in one bin); ``zero_width`` (``min_val == max_val``).
    """
    g = torch.Generator().manual_seed(bins)
    n = 20000
    if kind == "one_bin":
        histogram = torch.zeros(bins)
        histogram[bins // 3] = 1000.0
        return histogram, torch.tensor(-1.0), torch.tensor(2.0)
    if kind == "zero_width":
        histogram = torch.zeros(bins)
        histogram[0] = 100.0
        return histogram, torch.tensor(1.5), torch.tensor(1.5)
    samples = {
        "normal": lambda: torch.randn(n, generator=g),
        "empty_ends": lambda: torch.randn(n, generator=g),
        "student_t": lambda: _student_t2(n, g),
        "relu": lambda: torch.relu(torch.randn(n, generator=g)),
        "spike": lambda: torch.cat([torch.full((n,), 0.25), torch.randn(40, generator=g)]),
    }
    x = samples[kind]()
    lo, hi = torch.aminmax(x)
    if kind == "empty_ends":
        lo, hi = lo - 2.0, hi + 3.0
    return torch.histc(x, bins, lo.item(), hi.item()), lo, hi


def torch_ao_observer(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int
) -> TorchAOHistogramObserver:
    """torch.ao's HistogramObserver holding this histogram, with ``dst_nbins`` levels."""
    observer = TorchAOHistogramObserver(bins=histogram.numel())
    observer.dst_nbins = dst_nbins
    observer.histogram.copy_(histogram)
    observer.min_val.copy_(min_val)
    observer.max_val.copy_(max_val)
    return observer


@functools.cache
def torch_ao_search(kind: str, bins: int, dst_nbins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ao's chosen range for a :func:`make_histogram` case (cached: it is slow)."""
    return torch_ao_observer(*make_histogram(kind, bins), dst_nbins)._non_linear_param_search()


# (kind, bins, dst_nbins): 8-bit (256 levels) and 4-bit (16) searches on 2048 bins and on small odd
# bin counts, down to a single bin. relu/37/16 stops on its 9th candidate, the first of the
# launcher's second batch; zero_width and one_bin never see an error increase.
CASES = [
    ("student_t", 2048, 256),
    ("normal", 2048, 256),
    ("relu", 2048, 256),
    ("spike", 2048, 256),
    ("empty_ends", 2048, 256),
    ("one_bin", 2048, 256),
    ("zero_width", 2048, 256),
    ("student_t", 2048, 16),
    ("spike", 2048, 16),
    ("normal", 37, 16),
    ("relu", 37, 16),
    ("empty_ends", 37, 16),
    ("zero_width", 37, 16),
    ("student_t", 101, 256),
    ("one_bin", 5, 256),
    ("empty_ends", 5, 256),
    ("normal", 1, 256),
]


def _ids(case: tuple[str, int, int]) -> str:
    return "-".join(map(str, case))


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_histogram_search_matches_torch_ao(backend: str, case: tuple[str, int, int]) -> None:
    histogram, min_val, max_val = make_histogram(case[0], case[1])
    new_min, new_max = torch.ops.tritonobs.histogram_search(histogram, min_val, max_val, case[2])
    expected_min, expected_max = torch_ao_search(*case)
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)


# Long walks (about 60-80 moves before the error rises): the torch reference's later batches.
@pytest.mark.parametrize("case", [("normal", 2048, 16), ("relu", 2048, 16)], ids=_ids)
def test_histogram_search_torch_long_walk(case: tuple[str, int, int]) -> None:
    new_min, new_max = search_ops.histogram_search_torch(*make_histogram(case[0], case[1]), case[2])
    expected_min, expected_max = torch_ao_search(*case)
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)


@pytest.mark.interpret
def test_histogram_search_float64(backend: str) -> None:
    # A float64 histogram (factory_kwargs dtype): torch.ao then compares thresholds in float64.
    histogram, min_val, max_val = (t.double() for t in make_histogram("student_t", 301))
    new_min, new_max = torch.ops.tritonobs.histogram_search(histogram, min_val, max_val, 256)
    observer = TorchAOHistogramObserver(bins=301, factory_kwargs={"dtype": torch.float64})
    for name, value in (("histogram", histogram), ("min_val", min_val), ("max_val", max_val)):
        getattr(observer, name).copy_(value)
    expected_min, expected_max = observer._non_linear_param_search()
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)


@pytest.mark.interpret
@pytest.mark.parametrize("first_batch", [1, 3])
def test_histogram_search_independent_of_batching(
    backend: str, first_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The walk is cut into batches of candidates; the stop may fall anywhere in a batch, first
    # place included, and the result must not change.
    monkeypatch.setattr(search_ops, "FIRST_BATCH", first_batch)
    monkeypatch.setattr(search_kernels, "FIRST_BATCH", first_batch)
    case = ("relu", 37, 16)
    new_min, new_max = torch.ops.tritonobs.histogram_search(*make_histogram(*case[:2]), case[2])
    expected_min, expected_max = torch_ao_search(*case)
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)


@pytest.mark.interpret
def test_histogram_search_non_contiguous(backend: str) -> None:
    histogram, min_val, max_val = make_histogram("student_t", 2 * 37)
    view = histogram[::2]
    new_min, new_max = torch.ops.tritonobs.histogram_search(view, min_val, max_val, 16)
    expected_min, expected_max = torch_ao_observer(
        view.contiguous(), min_val, max_val, 16
    )._non_linear_param_search()
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)


def test_quantile_steps_are_torch_ao_doubles() -> None:
    # torch.ao's alpha/beta: Python doubles, stepped by repeated += 1e-5 / -= 1e-5.
    alpha, beta = search_ops.quantile_steps()
    a, b = 0.0, 1.0
    for k in range(len(alpha)):
        assert alpha[k] == a and beta[k] == b, k
        a += search_ops.STEP
        b -= search_ops.STEP
    assert alpha[-1] > beta[-1]


def test_search_path_moves_only() -> None:
    # Every candidate of the walk is a real move: the range shrinks at each step.
    histogram, _, _ = make_histogram("student_t", 2048)
    cumsum = torch.cumsum(histogram, dim=0).tolist()
    path = list(search_ops.search_path(cumsum, torch.sum(histogram).item()))
    widths = [end - start for start, end in [(0, 2047), *path]]
    assert path and all(a > b >= 0 for a, b in zip(widths, widths[1:], strict=False))


@pytest.mark.interpret
def test_histogram_search_opcheck(backend: str) -> None:
    histogram, min_val, max_val = make_histogram("relu", 37)
    torch.library.opcheck(
        torch.ops.tritonobs.histogram_search.default, (histogram, min_val, max_val, 16)
    )


def _student_t_stream(batches: int, growth: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(batches)
    return [_student_t2(3000, g) * growth**i for i in range(batches)]


@pytest.mark.interpret
@pytest.mark.parametrize("bins,dtype", [(2048, torch.quint8), (37, torch.qint8)])
@pytest.mark.parametrize("batches", [1, 3])
def test_histogram_observer_matches_torch_ao(
    backend: str, bins: int, dtype: torch.dtype, batches: int
) -> None:
    ours = tritonobs.HistogramObserver(bins=bins, dtype=dtype)
    reference = TorchAOHistogramObserver(bins=bins, dtype=dtype)
    for x in _student_t_stream(batches, growth=2.0):
        ours(x)
        reference(x)
    scale, zero_point = ours.calculate_qparams()
    expected_scale, expected_zero_point = reference.calculate_qparams()
    # One batch has no re-binning: exact everywhere. A growing range re-bins the histogram, which
    # the Triton kernels may round differently (the shared histogram_* tolerances).
    exact = batches == 1 or backend == "torch"
    scale_tol = EXACT if exact else TOLERANCES["histogram_scale"]
    zero_point_tol = EXACT if exact else TOLERANCES["histogram_zero_point"]
    torch.testing.assert_close(scale, expected_scale, **scale_tol)
    torch.testing.assert_close(zero_point, expected_zero_point, **zero_point_tol)
