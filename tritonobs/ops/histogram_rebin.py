"""``tritonobs::histogram_rebin``: a histogram mapped onto a wider range, as torch.ao re-bins it.

torch.ao's ``HistogramObserver._combine_histograms`` moves the running histogram into the range that
grew to hold a new batch. Without the batch's own counts, that is:

* same range: the histogram unchanged;
* a degenerate old range (``orig_min == orig_max``, every value was that one number): all the mass
  in the new bin of that number (``torch.histc`` of it over the new range, times the total);
* otherwise (``_upscale_histogram``): each old bin is split into ``upsample_rate`` equal parts whose
  mid-points (``torch.linspace`` over the old range plus half a sub-bin) go to the new bin
  ``torch.bucketize(mid, torch.linspace(new_min, new_max, bins + 1), right=True) - 1``, clamped to
  ``[0, bins - 1]``, and the parts are summed per new bin.

An uninitialised old range (``orig_min == +inf`` or ``orig_max == -inf``) holds no mass: the result
is zeros. The distributed merge uses this op to bring every rank's histogram onto the union range.
"""

from __future__ import annotations

import torch

from tritonobs.ops._dispatch import define_op


def _non_decreasing(values: torch.Tensor) -> bool:
    return values.numel() < 2 or values.diff().min().item() >= 0


def bucketize_right(values: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """``torch.bucketize(values, boundaries, right=True)``: per value, the boundaries ``<=`` it.

    ``linspace`` values and boundaries are sorted (checked): then boundary ``k`` is ``<= values[j]``
    exactly when ``j >= searchsorted(values, boundaries[k])``, and the counts are a cumulative sum
    over the ``B`` boundaries' positions, ``O(B log M + M)`` instead of a binary search per value
    (several times faster for ``M = 16 * B`` mid-points). Unsorted input takes ``torch.bucketize``.
    """
    if _non_decreasing(values) and _non_decreasing(boundaries):
        first = torch.searchsorted(values, boundaries)
        return torch.bincount(first, minlength=values.numel() + 1).cumsum_(0)[:-1]
    return torch.bucketize(values, boundaries, right=True)


def upscale_histogram_torch(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: float,
    new_max: float,
    upsample_rate: int,
) -> torch.Tensor:
    """torch.ao's ``_upscale_histogram``, with the same float roundings.

    Its ops, except: each bin is divided by ``upsample_rate`` before it is repeated (the same
    quotients), and ``bucketize`` is :func:`bucketize_right`. ``new_min``/``new_max`` are the
    values of torch.ao's 0-d tensors (``linspace`` reads them as doubles either way).
    """
    bins = histogram.numel()
    parts = (histogram / upsample_rate).repeat_interleave(upsample_rate)
    sub_bin = (orig_max - orig_min) / (bins * upsample_rate)
    mid_points = (
        torch.linspace(orig_min, orig_max, bins * upsample_rate + 1, device=histogram.device)[:-1]
        + 0.5 * sub_bin
    )
    boundaries = torch.linspace(new_min, new_max, bins + 1, device=histogram.device)
    buckets = bucketize_right(mid_points, boundaries).sub_(1).clamp_(0, bins - 1)
    return torch.bincount(buckets, weights=parts, minlength=bins)


def moved_histogram_torch(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: float,
    new_max: float,
    upsample_rate: int,
) -> torch.Tensor:
    """An initialised histogram over ``[orig_min, orig_max]`` on the different range
    ``[new_min, new_max]`` (torch.ao's ``_combine_histograms`` without the batch's counts)."""
    if orig_min.item() == orig_max.item():
        one_hot = torch.histc(orig_min, bins=histogram.numel(), min=new_min, max=new_max)
        return one_hot * histogram.sum()
    return upscale_histogram_torch(histogram, orig_min, orig_max, new_min, new_max, upsample_rate)


def histogram_rebin_torch(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: torch.Tensor,
    new_max: torch.Tensor,
    upsample_rate: int,
) -> torch.Tensor:
    """Torch reference of :func:`histogram_rebin` (branches on the range values, on the host)."""
    lo, hi, new_lo, new_hi = (v.item() for v in (orig_min, orig_max, new_min, new_max))
    if new_lo == lo and new_hi == hi:
        return histogram.clone()
    if lo == float("inf") or hi == float("-inf"):
        return torch.zeros_like(histogram)
    return moved_histogram_torch(histogram, orig_min, orig_max, new_lo, new_hi, upsample_rate)


def _histogram_rebin_fake(histogram, orig_min, orig_max, new_min, new_max, upsample_rate):
    return torch.empty_like(histogram)


@define_op(histogram_rebin_torch, "histogram_rebin:histogram_rebin_triton", _histogram_rebin_fake)
def histogram_rebin(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: torch.Tensor,
    new_max: torch.Tensor,
    upsample_rate: int,
) -> torch.Tensor:
    """``histogram`` over ``[orig_min, orig_max]`` re-binned onto ``[new_min, new_max]`` (torch.ao's algorithm).

    Args:
        histogram: float32 counts, shape ``[bins]``.
        orig_min: 0-d float32, the histogram's lower edge (``+inf`` when uninitialised).
        orig_max: 0-d float32, the histogram's upper edge (``-inf`` when uninitialised).
        new_min: 0-d float32, ``<= orig_min`` (or any value when the old range is uninitialised).
        new_max: 0-d float32, ``>= orig_max``.
        upsample_rate: sub-bins per old bin (HistogramObserver uses 16).

    Returns:
        float32 ``[bins]``: the old mass in the new bins (the same total up to float32 rounding).
    """
