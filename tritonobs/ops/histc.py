"""``tritonobs::histc``: ``torch.histc`` of the finite values, counted in integers.

Every finite value of ``x`` in ``[lo, hi]`` lands in the bin ``torch.histc`` gives it:
``trunc((v - lo) * bins / (hi - lo))`` in float32, in that order, with ``v == hi`` in the last bin.
Values outside ``[lo, hi]``, NaN and inf are not counted. As in ``torch.histc``, a degenerate range
``lo == hi`` is replaced by the min/max of ``x`` (of its finite values here), and if that is still a
single point ``c``, by ``[c - 1, c + 1]``. Counts are int64, exact past 2^24 per bin (where
``torch.histc``'s float32 counters stop growing).
"""

from __future__ import annotations

import torch

from tritonobs.ops._dispatch import register_kernels


def bin_index(x32: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """``torch.histc``'s bin of each value of ``x32``, for values known to lie in ``[lo, hi]``.

    Args:
        x32: float32 values, all in ``[lo, hi]``.
        lo: 0-d float32 lower edge.
        hi: 0-d float32 upper edge (``lo == hi`` only after :func:`widen_degenerate`).
        bins: number of bins.

    Returns:
        int64 bins, same shape as ``x32``: ``trunc((x - lo) * bins / (hi - lo))``, ``bins - 1`` at ``hi``.
    """
    if bool(lo == hi):
        # c +- 1 rounded back to c (|c| >= 2^24): torch.histc puts every value in the middle bin.
        return torch.full_like(x32, bins // 2, dtype=torch.int64)
    t = torch.sub(x32, lo)
    t.mul_(bins)
    t.div_(hi - lo)
    return t.to(torch.int64).clamp_(max=bins - 1)


def widen_degenerate(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.histc``'s range for a single point: ``[lo - 1, hi + 1]`` when ``lo == hi``."""
    degenerate = lo == hi
    return torch.where(degenerate, lo - 1, lo), torch.where(degenerate, hi + 1, hi)


def histc_torch(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Torch reference of :func:`histc`."""
    x32 = x.to(torch.float32).reshape(-1)
    finite = torch.isfinite(x32)
    if bool(lo == hi) and bool(finite.any()):
        lo, hi = torch.aminmax(x32[finite])
    lo, hi = widen_degenerate(lo.to(torch.float32), hi.to(torch.float32))
    counted = finite & (x32 >= lo) & (x32 <= hi)
    index = torch.where(counted, bin_index(torch.where(counted, x32, lo), lo, hi, bins), bins)
    return torch.bincount(index, minlength=bins + 1)[:bins].clone()


@torch.library.custom_op("tritonobs::histc", mutates_args=())
def histc(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Integer histogram of ``x``'s finite values over ``[lo, hi]``, binned as ``torch.histc``.

    Args:
        x: a floating-point tensor (float16, bfloat16, float32, float64), any shape and strides.
            Values are converted to float32 before binning.
        lo: 0-d float32 lower edge, on ``x``'s device.
        hi: 0-d float32 upper edge, ``>= lo``.
        bins: number of bins, ``>= 1``.

    Returns:
        int64 ``[bins]`` counts.
    """
    return histc_torch(x, lo, hi, bins)


@histc.register_fake
def _(x, lo, hi, bins):
    return x.new_empty((bins,), dtype=torch.int64)


register_kernels(histc, histc_torch, "histc:histc_triton")
