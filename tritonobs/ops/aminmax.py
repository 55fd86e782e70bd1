"""``tritonobs::aminmax``: per-tensor running min/max (or its moving average) over the finite values.

NaN/inf policy (shared by every statistic op): non-finite values never reach the statistics. They are
counted and skipped; a batch with no finite value leaves the running state as it was.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tritonobs.ops._dispatch import define_op


def update_running_(
    batch_min: torch.Tensor,
    batch_max: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Fold one batch's min/max into the running state in place, elementwise, in float32.

    ``averaging_constant=None`` keeps the running min/max; a number ``c`` keeps the moving average
    ``running + c * (batch - running)`` (torch.ao's arithmetic, rounded after each operation), where
    a running value still at its initial ``(+inf, -inf)`` takes the batch value. Elements whose batch
    saw no finite value (``batch_min > batch_max``) keep the running value.
    """
    if averaging_constant is None:
        # A batch without finite values has (+inf, -inf), which leaves min/max as they were.
        torch.minimum(running_min, batch_min, out=running_min)
        torch.maximum(running_max, batch_max, out=running_max)
        return
    old_min, old_max = running_min.float(), running_max.float()
    uninitialised = (old_min == float("inf")) & (old_max == float("-inf"))
    new_min = torch.where(
        uninitialised, batch_min, old_min + averaging_constant * (batch_min - old_min)
    )
    new_max = torch.where(
        uninitialised, batch_max, old_max + averaging_constant * (batch_max - old_max)
    )
    seen = batch_min <= batch_max
    running_min.copy_(torch.where(seen, new_min, old_min))
    running_max.copy_(torch.where(seen, new_max, old_max))


def all_finite(batch_min: torch.Tensor, batch_max: torch.Tensor) -> bool:
    """Whether every batch min and max is finite, in one host read.

    ``min``/``max`` propagate NaN and return inf when present, so finite results prove a clean
    batch. Per channel, the sum of the spans is read: it can overflow to inf on finite data, which
    only costs the masked pass.
    The torch path synchronizes here on CUDA; the Triton path never does.
    """
    return math.isfinite(float((batch_max - batch_min).sum()))


def finite_float32(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` in float32 and the mask of its finite values (checked after the conversion)."""
    x32 = x.to(torch.float32)
    return x32, torch.isfinite(x32)


def aminmax_torch(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Torch reference of :func:`aminmax`: the batch's min/max, the rest on host floats.

    The batch's min/max are read on the host (free on CPU; a sync on CUDA, where the Triton
    launcher runs instead), so a clean batch costs its reductions and at most two ``fill_``. The
    moving average is float32 arithmetic (numpy scalars round after each operation, as torch's
    float32 kernels do). One function, no helpers: this is the whole CPU forward of MinMaxObserver
    and each Python call on it costs microseconds between a model's layers.
    """
    batch_min, batch_max = torch.aminmax(x)
    if x.dtype == torch.float64:
        # Compared in float32: values beyond its range become inf (non-finite).
        batch_min, batch_max = batch_min.float(), batch_max.float()
    low, high = batch_min.item(), batch_max.item()
    if not (math.isfinite(low) and math.isfinite(high)):
        x32, finite = finite_float32(x)
        skipped = x.numel() - int(finite.sum())
        nonfinite_count.add_(skipped)
        if skipped == x.numel():
            return
        low = torch.where(finite, x32, math.inf).amin().item()
        high = torch.where(finite, x32, -math.inf).amax().item()
    old_min, old_max = running_min.item(), running_max.item()
    if averaging_constant is None:
        # Written only when it changes; a NaN running value stays (the comparison is false), as
        # torch.minimum/maximum keep it.
        if low < old_min:
            running_min.fill_(low)
        if high > old_max:
            running_max.fill_(high)
        return
    if old_min == math.inf and old_max == -math.inf:
        running_min.fill_(low)
        running_max.fill_(high)
        return
    c = np.float32(averaging_constant)
    old_low, old_high = np.float32(old_min), np.float32(old_max)
    running_min.fill_(float(old_low + c * (np.float32(low) - old_low)))
    running_max.fill_(float(old_high + c * (np.float32(high) - old_high)))


def _aminmax_fake(x, running_min, running_max, nonfinite_count, averaging_constant):
    return None


@define_op(
    aminmax_torch,
    "aminmax:aminmax_triton",
    _aminmax_fake,
    mutates_args=("running_min", "running_max", "nonfinite_count"),
)
def aminmax(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Fold the finite values of ``x`` into a running per-tensor min/max, in place.

    Args:
        x: a floating-point tensor (float16, bfloat16, float32, float64) of any shape and strides,
            with at least one element. Values are compared in float32.
        running_min: 0-d float32 (float64 holds float32 values), ``+inf`` while uninitialised;
            updated in place.
        running_max: 0-d, ``-inf`` while uninitialised; updated in place.
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values skipped.
        averaging_constant: ``None`` for the running min/max (MinMaxObserver), or the moving-average
            constant (MovingAverageMinMaxObserver).
    """
