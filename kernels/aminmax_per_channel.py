"""Triton launcher of ``tritonobs::aminmax_per_channel``.

The kernel is :mod:`tritonobs.kernels.aminmax`'s ``_aminmax_kernel``: the channel axis is its ``C``
axis, read in place through the tensor's strides (no permute), with blocks of channels per program.
"""

from __future__ import annotations

import torch

from tritonobs.kernels.aminmax import aminmax_update
from tritonobs.ops.aminmax_per_channel import normalize_axis


def aminmax_per_channel_triton(
    x: torch.Tensor,
    ch_axis: int,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Triton launcher of ``tritonobs::aminmax_per_channel`` (same arguments; in place)."""
    axis = normalize_axis(ch_axis, x.dim())
    aminmax_update(x, axis, running_min, running_max, nonfinite_count, averaging_constant)
