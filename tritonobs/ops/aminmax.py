"""``tritonobs::aminmax``: per-tensor running min/max (or its moving average) over the finite values.

NaN/inf policy (shared by every statistic op): non-finite values never reach the statistics. They are
counted and skipped; a batch with no finite value leaves the running state as it was.
"""

from __future__ import annotations

import math

import torch

from tritonobs.ops._dispatch import define_op


def update_running(
    batch_min: torch.Tensor,
    batch_max: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    averaging_constant: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold one batch's min/max into the running state, elementwise, in float32.

    ``averaging_constant=None`` keeps the running min/max; a number ``c`` keeps the moving average
    ``running + c * (batch - running)`` (torch.ao's arithmetic, rounded after each operation), where
    a running value still at its initial ``(+inf, -inf)`` takes the batch value. Elements whose batch
    saw no finite value (``batch_min > batch_max``) keep the running value.
    """
    if averaging_constant is None:
        # A batch without finite values has (+inf, -inf), which leaves min/max as they were.
        return torch.minimum(batch_min, running_min), torch.maximum(batch_max, running_max)
    uninitialised = (running_min == float("inf")) & (running_max == float("-inf"))
    new_min = torch.where(
        uninitialised, batch_min, running_min + averaging_constant * (batch_min - running_min)
    )
    new_max = torch.where(
        uninitialised, batch_max, running_max + averaging_constant * (batch_max - running_max)
    )
    seen = batch_min <= batch_max
    return torch.where(seen, new_min, running_min), torch.where(seen, new_max, running_max)


def all_finite(batch_min: torch.Tensor, batch_max: torch.Tensor) -> bool:
    """Whether every batch min and max is finite, in one host read.

    ``min``/``max`` propagate NaN and return inf when present, so finite results prove a clean
    batch. Per channel, the sum of the spans is read: it can overflow to inf on finite data, which
    only costs the masked pass.
    The torch path synchronizes here on CUDA; the Triton path never does.
    """
    if batch_min.dim() == 0:
        return math.isfinite(float(batch_min)) and math.isfinite(float(batch_max))
    return math.isfinite(float((batch_max - batch_min).sum()))


def finite_float32(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` in float32 and the mask of its finite values (checked after the conversion)."""
    x32 = x.to(torch.float32)
    return x32, torch.isfinite(x32)


def aminmax_torch(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    averaging_constant: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`aminmax`."""
    batch_min, batch_max = torch.aminmax(x)
    batch_min, batch_max = batch_min.to(torch.float32), batch_max.to(torch.float32)
    nonfinite = torch.zeros((), dtype=torch.int64, device=x.device)
    if not all_finite(batch_min, batch_max):
        x32, finite = finite_float32(x)
        nonfinite = (~finite).sum()
        batch_min = torch.where(finite, x32, float("inf")).amin()
        batch_max = torch.where(finite, x32, float("-inf")).amax()
    new_min, new_max = update_running(
        batch_min, batch_max, running_min, running_max, averaging_constant
    )
    return new_min, new_max, nonfinite


def aminmax(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    averaging_constant: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Running per-tensor min/max of ``x``'s finite values, folded into the running state.

    Args:
        x: a floating-point tensor (float16, bfloat16, float32, float64) of any shape and strides,
            with at least one element. Values are compared in float32.
        running_min: 0-d float32, ``+inf`` while uninitialised.
        running_max: 0-d float32, ``-inf`` while uninitialised.
        averaging_constant: ``None`` for the running min/max (MinMaxObserver), or the moving-average
            constant (MovingAverageMinMaxObserver).

    Returns:
        ``(new_min, new_max, nonfinite)``: the new running min/max (0-d float32) and the number of
        NaN/inf values skipped (0-d int64).
    """
    return torch.ops.tritonobs.aminmax.default(x, running_min, running_max, averaging_constant)


def _aminmax_fake(x, running_min, running_max, averaging_constant):
    scalar = x.new_empty((), dtype=torch.float32)
    return scalar, torch.empty_like(scalar), x.new_empty((), dtype=torch.int64)


define_op(aminmax, aminmax_torch, "aminmax:aminmax_triton", _aminmax_fake)
