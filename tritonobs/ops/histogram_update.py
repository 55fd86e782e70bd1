"""``tritonobs::histogram_update``: one HistogramObserver forward step, in place.

Same arithmetic as torch.ao's ``HistogramObserver.forward`` on float32 values:

* first batch (``min_val == +inf`` or ``max_val == -inf``): the range becomes the batch's min/max
  and the histogram is ``torch.histc`` of the batch over it;
* later batches: the range becomes ``[min(min_val, batch_min), max(max_val, batch_max)]`` and the
  batch is counted over it; if the range is unchanged the counts are added, else they are added to
  the old histogram re-binned onto the new range (:mod:`tritonobs.ops.histogram_rebin`).

The op writes ``histogram``, ``min_val`` and ``max_val`` in place and adds the number of NaN/inf
values it skipped to ``nonfinite_count``: a HistogramObserver forward is this one op, its buffers
keep their identity. Inputs are observed as float32 (float16/bfloat16 values convert exactly;
float64 values round, and those beyond float32's range become inf). A batch with no finite value
leaves the histogram and range unchanged. torch.ao drops inf with a warning, lets NaN break the
state, and bins float16/bfloat16 inputs in their own precision, so for those the histogram can
differ from torch.ao's by a bin here and there (it equals torch.ao fed ``x.float()``).
"""

from __future__ import annotations

import math

import torch

from tritonobs.ops._dispatch import define_op
from tritonobs.ops.histc import count_in_range, histc_range
from tritonobs.ops.histogram_rebin import moved_histogram_torch


def histogram_update_torch(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    nonfinite_count: torch.Tensor,
    upsample_rate: int,
) -> None:
    """Torch reference of :func:`histogram_update` (branches on values read on the host)."""
    bins = histogram.numel()
    # float16/bfloat16 convert to float32 exactly, chunk by chunk inside count_in_range; float64
    # rounds first, so that values beyond float32's range count as inf.
    x = x.to(torch.float32) if x.dtype == torch.float64 else x
    batch_min, batch_max = (v.item() for v in torch.aminmax(x))
    # aminmax propagates NaN and returns inf when present, so finite results prove a clean batch;
    # only a batch with a NaN or an inf pays for the masked copy.
    if not (math.isfinite(batch_min) and math.isfinite(batch_max)):
        finite = x[torch.isfinite(x)]
        nonfinite_count.add_(x.numel() - finite.numel())
        if finite.numel() == 0:
            return
        x = finite
        batch_min, batch_max = (v.item() for v in torch.aminmax(x))
    cur_min, cur_max = min_val.item(), max_val.item()
    if cur_min == math.inf or cur_max == -math.inf:
        # torch.histc's float32 counts, whatever the buffer's dtype.
        histogram.copy_(count_in_range(x, *histc_range(batch_min, batch_max), bins).float())
        min_val.fill_(batch_min)
        max_val.fill_(batch_max)
        return
    # torch.minimum/maximum (a NaN running value stays NaN).
    new_min = batch_min if batch_min < cur_min else cur_min
    new_max = batch_max if batch_max > cur_max else cur_max
    counts = count_in_range(x, *histc_range(new_min, new_max), bins)
    if new_min == cur_min and new_max == cur_max:
        histogram.add_(counts)
        return
    moved = moved_histogram_torch(histogram, min_val, max_val, new_min, new_max, upsample_rate)
    histogram.copy_(moved.add_(counts))
    min_val.fill_(new_min)
    max_val.fill_(new_max)


def _histogram_update_fake(x, histogram, min_val, max_val, nonfinite_count, upsample_rate):
    return None


@define_op(
    histogram_update_torch,
    "histogram_update:histogram_update_triton",
    _histogram_update_fake,
    mutates_args=("histogram", "min_val", "max_val", "nonfinite_count"),
)
def histogram_update(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    nonfinite_count: torch.Tensor,
    upsample_rate: int,
) -> None:
    """Fold ``x``'s finite values into a running histogram over ``[min_val, max_val]``, in place.

    Args:
        x: a floating-point tensor (float16, bfloat16, float32, float64), any shape and strides,
            with at least one element.
        histogram: float32 ``[bins]`` running counts, updated in place.
        min_val: 0-d float32 lower edge, ``+inf`` while uninitialised, updated in place.
        max_val: 0-d float32 upper edge, ``-inf`` while uninitialised, updated in place.
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values skipped.
        upsample_rate: sub-bins per old bin when the range grows (HistogramObserver uses 16).

    Buffers of another floating dtype (float64 via ``factory_kwargs``) work too: the torch
    reference follows torch.ao's ops on them, the Triton kernels round-trip through float32.
    """
