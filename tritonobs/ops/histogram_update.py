"""``tritonobs::histogram_update``: one HistogramObserver forward step, functional.

Same arithmetic as torch.ao's ``HistogramObserver.forward`` on float32 values:

* first batch (``min_val == +inf`` or ``max_val == -inf``): the range becomes the batch's min/max
  and the histogram is ``torch.histc`` of the batch over it;
* later batches: the range becomes ``[min(min_val, batch_min), max(max_val, batch_max)]`` and the
  batch is counted over it; if the range is unchanged the counts are added, else they are added to
  the old histogram re-binned onto the new range (:mod:`tritonobs.ops.histogram_rebin`).

Inputs are observed as float32 (float16/bfloat16 values convert exactly; float64 values round, and
those beyond float32's range become inf). NaN and inf are skipped and counted; a batch with no finite
value leaves the state unchanged. torch.ao drops inf with a warning, lets NaN break the state, and
bins float16/bfloat16 inputs in their own precision, so for those the histogram can differ from
torch.ao's by a bin here and there (it equals torch.ao fed ``x.float()``).
"""

from __future__ import annotations

import math

import torch

from tritonobs.ops._dispatch import define_op
from tritonobs.ops.histc import count_in_range, histc_range
from tritonobs.ops.histogram_rebin import histogram_rebin_torch


def histogram_update_torch(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    upsample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`histogram_update` (branches on values, on the host)."""
    bins = histogram.numel()
    # float16/bfloat16 convert to float32 exactly, chunk by chunk inside count_in_range; float64
    # rounds first, so that values beyond float32's range count as inf.
    x = x.to(torch.float32) if x.dtype == torch.float64 else x
    batch_min, batch_max = (v.to(torch.float32) for v in torch.aminmax(x))
    nonfinite = torch.zeros((), dtype=torch.int64, device=x.device)
    # aminmax propagates NaN and returns inf when present, so finite results prove a clean batch;
    # only a batch with a NaN or an inf pays for the masked copy.
    if not (math.isfinite(batch_min.item()) and math.isfinite(batch_max.item())):
        finite = torch.isfinite(x)
        nonfinite = (~finite).sum()
        x = x[finite]
        if x.numel() == 0:
            return histogram.clone(), min_val.clone(), max_val.clone(), nonfinite
        batch_min, batch_max = (v.to(torch.float32) for v in torch.aminmax(x))
    cur_min, cur_max = min_val.item(), max_val.item()
    if cur_min == math.inf or cur_max == -math.inf:
        lo, hi = histc_range(batch_min.item(), batch_max.item())
        counts = count_in_range(x, lo, hi, bins).to(torch.float32)
        return counts, batch_min, batch_max, nonfinite
    new_min = torch.minimum(min_val, batch_min)
    new_max = torch.maximum(max_val, batch_max)
    lo, hi = histc_range(new_min.item(), new_max.item())
    counts = count_in_range(x, lo, hi, bins)
    if new_min.item() == cur_min and new_max.item() == cur_max:
        return histogram + counts, new_min, new_max, nonfinite
    rebinned = histogram_rebin_torch(histogram, min_val, max_val, new_min, new_max, upsample_rate)
    return rebinned + counts, new_min, new_max, nonfinite


def histogram_update(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    upsample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold ``x``'s finite values into a running histogram over ``[min_val, max_val]``.

    Args:
        x: a floating-point tensor (float16, bfloat16, float32, float64), any shape and strides,
            with at least one element.
        histogram: float32 ``[bins]`` running counts.
        min_val: 0-d float32 lower edge, ``+inf`` while uninitialised.
        max_val: 0-d float32 upper edge, ``-inf`` while uninitialised.
        upsample_rate: sub-bins per old bin when the range grows (HistogramObserver uses 16).

    Returns:
        ``(histogram, min_val, max_val, nonfinite)``: the new float32 histogram and range, and the
        number of NaN/inf values skipped (0-d int64).
    """
    return torch.ops.tritonobs.histogram_update.default(
        x, histogram, min_val, max_val, upsample_rate
    )


def _histogram_update_fake(x, histogram, min_val, max_val, upsample_rate):
    return (
        torch.empty_like(histogram),
        torch.empty_like(min_val),
        torch.empty_like(max_val),
        x.new_empty((), dtype=torch.int64),
    )


define_op(
    histogram_update,
    histogram_update_torch,
    "histogram_update:histogram_update_triton",
    _histogram_update_fake,
)
