"""``tritonobs::histogram_search``: HistogramObserver's L2 range search, vectorized, same result as torch.ao.

torch.ao's ``_non_linear_param_search`` walks two quantiles toward each other in steps of ``1e-5``:
``alpha`` up from 0 and ``beta`` down from 1 (Python doubles, rounded after every step). Each step
finds ``l``/``r``, the bins where the cumulative histogram crosses ``alpha * total`` and
``beta * total`` (clamped to the current ``[start, end]``), moves the side that gains more bins, and
stops at the first move whose quantization error is larger than the previous one. That is up to
``1e5`` Python iterations with a host round-trip each.

Here the walk is split in two, because the path of candidate ranges does not depend on the errors
(only where the walk stops does):

* :func:`search_path` replays the walk on the host with bisections of the cumulative histogram,
  skipping in bulk the runs of ``beta`` steps that move nothing. Every step it yields is a real move,
  so a histogram of ``bins`` bins has fewer than ``bins`` candidates.
* the errors of a batch of candidates come from ``tritonobs::quantization_error`` in one call, and the
  chosen range is the candidate before the first error that is larger than its predecessor.

The comparisons and sums follow torch.ao's precision exactly: the quantile thresholds are the same
doubles, rounded to float32 as torch rounds a Python float compared with a float32 tensor, and the
errors are float32 sums compared as such.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator

import numpy as np
import torch

from tritonobs.ops._dispatch import define_op
from tritonobs.ops.quantization_error import quantization_error_torch

STEP = 1e-5
"""torch.ao's quantile step."""

# Candidates evaluated by the first error batch; later batches grow by BATCH_GROWTH. The walk
# usually stops within a few moves, so a small first batch keeps the common case cheap, and
# doubling keeps the candidates evaluated past the stopping point below the ones before it.
FIRST_BATCH = 8
BATCH_GROWTH = 2


@functools.cache
def quantile_steps() -> tuple[list[float], list[float]]:
    """torch.ao's ``alpha`` and ``beta`` after ``k`` steps, for every ``k`` the walk can reach.

    ``alpha[k]`` is ``0.0`` plus ``STEP`` added ``k`` times and ``beta[k]`` is ``1.0`` minus ``STEP``
    subtracted ``k`` times, each operation rounded to a double like torch.ao's Python loop (a
    cumulative sum in float64 adds in that same order). The walk ends once ``alpha >= beta``, so
    ``alpha`` and ``beta`` each take at most ``1 / STEP`` steps; a few more cover the rounding.

    Returns:
        ``(alpha, beta)`` as Python lists of floats.
    """
    n = math.ceil(1 / STEP) + 8
    increments = np.full(n, STEP)
    increments[0] = 0.0
    decrements = np.full(n, -STEP)
    decrements[0] = 1.0
    return np.cumsum(increments).tolist(), np.cumsum(decrements).tolist()


def _float32(x: float) -> float:
    # Round a double to the nearest float32 (ties to even), as torch converts a Python scalar.
    return struct.unpack("f", struct.pack("f", x))[0]


def _first_below(
    beta: list[float], total: float, bound: float, lo: int, rounded: Callable[[float], float]
) -> int:
    # First m >= lo with rounded(beta[m] * total) < bound, else len(beta). Galloping, then a
    # bisection: runs of no-op steps are usually short.
    def below(m: int) -> bool:
        return rounded(beta[m] * total) < bound

    hi, width = lo, 1
    while hi < len(beta) and not below(hi):
        lo, hi, width = hi + 1, hi + width, width * 2
    hi = min(hi, len(beta))
    return lo + bisect_left(range(lo, hi), True, key=below)


def search_path(
    cumsum: list[float], total: float, float32: bool = True
) -> Iterator[tuple[int, int]]:
    """The candidate ranges torch.ao's search evaluates, in order, as ``(start_bin, end_bin)``.

    Args:
        cumsum: the cumulative histogram (``torch.cumsum`` on the histogram's device), as Python
            floats; non-decreasing.
        total: the sum of the histogram (``torch.sum``), as a Python float.
        float32: whether the histogram is float32, where torch compares ``cSum[l]`` with the
            threshold rounded to float32; ``False`` for float64, compared as is.

    Returns:
        An iterator over the real moves of the walk, up to where ``alpha >= beta``; each yields the
        range after the move. The ranges only shrink, so there are fewer than ``len(cumsum)``.
    """
    alpha, beta = quantile_steps()
    rounded = _float32 if float32 else float
    start, end = 0, len(cumsum) - 1
    i = j = 0
    while alpha[i] < beta[j]:
        # cSum[l] < next_alpha * total compares in cSum's dtype, so the thresholds are rounded.
        left = min(max(bisect_left(cumsum, rounded(alpha[i + 1] * total)), start), end)
        right = min(max(bisect_right(cumsum, rounded(beta[j + 1] * total)) - 1, start), end)
        if left - start > end - right:
            start = left
            i += 1
        elif right < end:
            end = right
            j += 1
        elif start == end:
            # One bin left: no step can move either side any more.
            return
        else:
            # Neither side moves (l == start, r == end): beta alone steps on, with l fixed, until
            # its threshold drops below cumsum[end], where r < end. Jump to the step before that
            # one; the loop condition then decides whether the walk gets there.
            m = _first_below(beta, total, cumsum[end], j + 2, rounded)
            if m == len(beta):
                return
            j = m - 1
            continue
        yield start, end


def _chosen_range(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    dst_nbins: int,
    first_batch: int,
    growth: int,
) -> tuple[int, int]:
    bins = histogram.numel()
    total = torch.sum(histogram).item()
    path = search_path(
        torch.cumsum(histogram, dim=0).tolist(), total, histogram.dtype == torch.float32
    )
    start, end = 0, bins - 1
    norm_min = math.inf
    batch = first_batch
    while candidates := list(itertools.islice(path, batch)):
        starts, ends = (
            torch.tensor(side, dtype=torch.int64, device=histogram.device)
            for side in zip(*candidates, strict=True)
        )
        errors = quantization_error_torch(histogram, min_val, max_val, starts, ends, dst_nbins)
        for (next_start, next_end), norm in zip(candidates, errors.tolist(), strict=True):
            if norm > norm_min:
                return start, end
            norm_min = norm
            start, end = next_start, next_end
        batch *= growth
    return start, end


def range_of_bins(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    start_bin: int | torch.Tensor,
    end_bin: int | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The value range of the source bins ``start_bin..end_bin``, in torch.ao's float32 arithmetic.

    Returns:
        ``(min_val + bin_width * start_bin, min_val + bin_width * (end_bin + 1))`` with
        ``bin_width = (max_val - min_val) / bins``, each a 0-d float32 tensor.
    """
    bin_width = (max_val - min_val) / histogram.numel()
    return min_val + bin_width * start_bin, min_val + bin_width * (end_bin + 1)


def histogram_search_torch(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`histogram_search`: host walk, errors in growing batches."""
    start, end = _chosen_range(histogram, min_val, max_val, dst_nbins, FIRST_BATCH, BATCH_GROWTH)
    return range_of_bins(histogram, min_val, max_val, start, end)


def _histogram_search_fake(histogram, min_val, max_val, dst_nbins):
    return torch.empty_like(min_val), torch.empty_like(max_val)


@define_op(
    histogram_search_torch,
    "histogram_search:histogram_search_triton",
    _histogram_search_fake,
)
def histogram_search(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The range torch.ao's ``HistogramObserver._non_linear_param_search`` picks, bit for bit.

    Synchronizes with the host (the walk runs there); meant for ``calculate_qparams``.

    Args:
        histogram: float32 counts, shape ``[bins]``, over ``[min_val, max_val]``.
        min_val: 0-d float32, the histogram's lower edge.
        max_val: 0-d float32, the histogram's upper edge.
        dst_nbins: number of quantization levels (``2 ** bits``).

    Returns:
        ``(new_min, new_max)``, 0-d float32: ``min_val + bin_width * start_bin`` and
        ``min_val + bin_width * (end_bin + 1)`` for the chosen bins.
    """
