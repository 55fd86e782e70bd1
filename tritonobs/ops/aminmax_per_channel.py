"""``tritonobs::aminmax_per_channel``: running min/max (or moving average) per channel on any axis."""

from __future__ import annotations

import math

import torch

from tritonobs.ops._dispatch import define_op
from tritonobs.ops.aminmax import all_finite, finite_float32, update_running_


def channel_view(x: torch.Tensor, ch_axis: int) -> torch.Tensor:
    """``x`` as ``[outer, C, inner]`` (a view when the strides allow it, else a copy)."""
    shape = x.shape
    outer = math.prod(shape[:ch_axis])
    inner = math.prod(shape[ch_axis + 1 :])
    return x.reshape(outer, shape[ch_axis], inner)


def normalize_axis(ch_axis: int, ndim: int) -> int:
    """``ch_axis`` in ``[0, ndim)``; ``ValueError`` when it is out of range."""
    if not -ndim <= ch_axis < ndim:
        raise ValueError(f"ch_axis={ch_axis} is out of range for a tensor with {ndim} dimensions")
    return ch_axis % ndim


def aminmax_per_channel_torch(
    x: torch.Tensor,
    ch_axis: int,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Torch reference of :func:`aminmax_per_channel`."""
    y = channel_view(x, normalize_axis(ch_axis, x.dim()))
    outer, _, inner = y.shape
    # amin + amax: two vectorized passes, many times faster on CPU than aminmax(dim=...).
    if inner == 1:
        y, dims = y.squeeze(2), 0
    elif outer == 1:
        y, dims = y.squeeze(0), 1
    else:
        dims = (0, 2)
    batch_min, batch_max = y.amin(dim=dims), y.amax(dim=dims)
    batch_min, batch_max = batch_min.to(torch.float32), batch_max.to(torch.float32)
    if not all_finite(batch_min, batch_max):
        y32, finite = finite_float32(y)
        nonfinite_count.add_(y.numel() - int(finite.sum()))
        batch_min = torch.where(finite, y32, float("inf")).amin(dim=dims)
        batch_max = torch.where(finite, y32, float("-inf")).amax(dim=dims)
    update_running_(batch_min, batch_max, running_min, running_max, averaging_constant)


def _aminmax_per_channel_fake(
    x, ch_axis, running_min, running_max, nonfinite_count, averaging_constant
):
    return None


@define_op(
    aminmax_per_channel_torch,
    "aminmax_per_channel:aminmax_per_channel_triton",
    _aminmax_per_channel_fake,
    mutates_args=("running_min", "running_max", "nonfinite_count"),
)
def aminmax_per_channel(
    x: torch.Tensor,
    ch_axis: int,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Fold the finite values of ``x`` into a running min/max per index of ``ch_axis``, in place.

    ``x`` is read as an ``[outer, C, inner]`` view; nothing is permuted.

    Args:
        x: floating-point tensor (float16, bfloat16, float32, float64), at least one element.
        ch_axis: channel axis, negative counts from the end.
        running_min: float32 ``[C]`` (float64 holds float32 values), updated in place. ``+inf``
            marks a channel that has not seen a finite value.
        running_max: float32 ``[C]``, ``-inf`` likewise.
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values skipped.
        averaging_constant: ``None`` for min/max, the moving-average constant otherwise.
    """
