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
from tritonobs.ops.quantization_error import quantization_error_torch

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
    # A single bin has no candidate range: the op returns the histogram's range, launching nothing.
    pytest.param(
        ("normal", 1, 256), marks=pytest.mark.fallback("one bin: the walk has no candidate")
    ),
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
@pytest.mark.fallback("the kernels are float32: a float64 histogram takes the torch reference")
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


def _spike_and_tail(bins: int) -> torch.Tensor:
    """20 bins of 4900 and a tail of ``bins - 20`` bins of 1 above them. Each tail bin holds about
    ``1e-5`` of the mass (torch.ao's quantile step), so every step of the walk clips one tail bin
    (``bins - 1`` candidates); with 2 levels the error falls for most of the tail."""
    histogram = torch.ones(bins)
    histogram[:20] = 4900.0
    return histogram


@functools.cache
def _spike_and_tail_torch_ao() -> tuple[torch.Tensor, torch.Tensor]:
    histogram = _spike_and_tail(1160)
    observer = torch_ao_observer(histogram, torch.tensor(-1.0), torch.tensor(1.0), 2)
    return observer._non_linear_param_search()


@pytest.mark.interpret
def test_histogram_search_stops_past_the_first_block(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1159 candidates, all in one launch; the error first rises at candidate 1049, in the search
    # kernel's second block of BLOCK = 1024. (The launcher's own batches, 8, 64, 512, 4096, would
    # need a walk of over 1600 moves to get there: a histogram of ~2000 bins, 4x the interpreter
    # time.)
    monkeypatch.setattr(search_kernels, "FIRST_BATCH", 2048)
    histogram = _spike_and_tail(1160)
    min_val, max_val = torch.tensor(-1.0), torch.tensor(1.0)
    new_min, new_max = torch.ops.tritonobs.histogram_search(histogram, min_val, max_val, 2)
    expected_min, expected_max = _spike_and_tail_torch_ao()
    torch.testing.assert_close(new_min, expected_min, **EXACT)
    torch.testing.assert_close(new_max, expected_max, **EXACT)

    # The premise, from the torch reference's walk and errors.
    path = list(search_ops.search_path(torch.cumsum(histogram, 0).tolist(), 99140.0))
    starts, ends = (torch.tensor(side) for side in zip(*path, strict=True))
    errors = quantization_error_torch(histogram, min_val, max_val, starts, ends, 2).tolist()
    stop = next(k for k in range(1, len(errors)) if errors[k] > errors[k - 1])
    assert (len(path), stop) == (1159, 1049)
    assert search_kernels.BLOCK <= stop < len(path) <= search_kernels.FIRST_BATCH


@pytest.mark.interpret
@pytest.mark.parametrize("stop", [0, 1023, 1024, 2100, None])
def test_histogram_search_kernel_folds_every_block(stop: int | None) -> None:
    # One launch of 2500 candidates (three blocks of 1024) with falling errors, except where the
    # error rises at ``stop`` and again at 2400: the walk stops at the first rise, whichever block
    # it is in (at 1024 the comparison crosses a block boundary); 0 rises over the last accepted
    # error; None never rises.
    k = 2500
    errors = torch.linspace(100.0, 1.0, k)
    if stop is not None:
        errors[[stop, 2400]] += 50.0
    bounds = torch.stack([torch.arange(k), 5000 - torch.arange(k)])
    norm_min = torch.tensor(99.0 if stop == 0 else 1000.0)
    chosen = torch.tensor([-1, -1])
    stopped = torch.zeros((), dtype=torch.int32)
    expected_norm_min = norm_min.clone()
    search_kernels._histogram_search_kernel[(1,)](
        errors, bounds, k, norm_min, chosen, stopped, BLOCK=search_kernels.BLOCK
    )
    accepted = k if stop is None else stop
    if accepted > 0:
        expected_chosen = bounds[:, accepted - 1]
        expected_norm_min = errors[accepted - 1]
    else:
        expected_chosen = torch.tensor([-1, -1])
    torch.testing.assert_close(chosen, expected_chosen, **EXACT)
    torch.testing.assert_close(norm_min, expected_norm_min, **EXACT)
    assert stopped.item() == (stop is not None)


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
    # Exact on both backends, re-binning included (measured, issue 13).
    for got, expected in zip(ours.calculate_qparams(), reference.calculate_qparams(), strict=True):
        torch.testing.assert_close(got, expected, **EXACT)
