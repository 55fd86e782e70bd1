"""``tritonobs::quantization_error`` against torch.ao's ``_compute_quantization_error``.

The torch reference keeps torch.ao's float32 arithmetic and sum order, so it matches bit for bit;
the Triton kernel sums the per-bin terms in another order (``quantization_error_interpreter``),
except where a candidate's sum has a single non-zero term (one non-empty bin), which is exact.
"""

from __future__ import annotations

import random

import pytest
import torch

from tests.conftest import TOLERANCES
from tests.test_histogram_search import make_histogram, torch_ao_observer

# (kind, bins, dst_nbins)
CASES = [
    ("student_t", 2048, 256),
    ("relu", 2048, 16),
    ("spike", 101, 256),
    ("empty_ends", 37, 16),
    ("one_bin", 5, 256),
    ("zero_width", 37, 16),
    ("normal", 1, 256),
]


def _candidates(bins: int) -> tuple[list[int], list[int]]:
    # The full range, single bins at both ends and in the middle, and random ranges.
    rng = random.Random(bins)
    pairs = [(0, bins - 1), (0, 0), (bins - 1, bins - 1), (bins // 2, bins // 2)]
    for _ in range(9):
        a, b = rng.randrange(bins), rng.randrange(bins)
        pairs.append((min(a, b), max(a, b)))
    starts, ends = zip(*pairs, strict=True)
    return list(starts), list(ends)


def _tolerance(backend: str, histogram: torch.Tensor) -> dict[str, float]:
    if backend == "torch" or torch.count_nonzero(histogram) <= 1:
        return {"atol": 0.0, "rtol": 0.0}
    return TOLERANCES["quantization_error_interpreter"]


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_quantization_error_matches_torch_ao(backend: str, case: tuple[str, int, int]) -> None:
    kind, bins, dst_nbins = case
    histogram, min_val, max_val = make_histogram(kind, bins)
    starts, ends = _candidates(bins)
    errors = torch.ops.tritonobs.quantization_error(
        histogram, min_val, max_val, torch.tensor(starts), torch.tensor(ends), dst_nbins
    )
    observer = torch_ao_observer(histogram, min_val, max_val, dst_nbins)
    expected = torch.tensor(
        [observer._compute_quantization_error(s, e) for s, e in zip(starts, ends, strict=True)],
        dtype=torch.float32,
    )
    torch.testing.assert_close(errors, expected, **_tolerance(backend, histogram))


@pytest.mark.interpret
@pytest.mark.fallback("no candidate: an empty result, nothing to launch")
def test_quantization_error_no_candidates(backend: str) -> None:
    histogram, min_val, max_val = make_histogram("normal", 37)
    empty = torch.zeros(0, dtype=torch.int64)
    errors = torch.ops.tritonobs.quantization_error(histogram, min_val, max_val, empty, empty, 16)
    assert errors.shape == (0,) and errors.dtype == torch.float32


@pytest.mark.interpret
def test_quantization_error_non_contiguous(backend: str) -> None:
    # Every other bin of a histogram, and candidate bounds taken from a strided [K, 2] tensor.
    histogram, min_val, max_val = make_histogram("student_t", 2 * 101)
    view = histogram[::2]
    starts, ends = _candidates(101)
    bounds = torch.tensor(list(zip(starts, ends, strict=True)))
    errors = torch.ops.tritonobs.quantization_error(
        view, min_val, max_val, bounds[:, 0], bounds[:, 1], 256
    )
    observer = torch_ao_observer(view.contiguous(), min_val, max_val, 256)
    expected = torch.tensor(
        [observer._compute_quantization_error(s, e) for s, e in zip(starts, ends, strict=True)],
        dtype=torch.float32,
    )
    torch.testing.assert_close(errors, expected, **_tolerance(backend, view))


@pytest.mark.interpret
def test_quantization_error_opcheck(backend: str) -> None:
    histogram, min_val, max_val = make_histogram("relu", 37)
    starts, ends = _candidates(37)
    torch.library.opcheck(
        torch.ops.tritonobs.quantization_error.default,
        (histogram, min_val, max_val, torch.tensor(starts), torch.tensor(ends), 16),
    )
