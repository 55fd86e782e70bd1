"""Launcher of ``tritonobs::amax_histogram_update`` on CUDA: for now the torch reference.

The collect step's growth decision (``ceil(x_max / width)`` bins, ``arange`` edges) is taken on
the host, as in ModelOpt: three host reads per batch on CUDA. A sync-free version (an abs-max
reduction kernel, a one-program state kernel that writes the edges and the bin count into the
fixed-capacity buffers, and a binning kernel that reads them from device memory) is not written
yet; this module keeps the op's CUDA path working meanwhile.
"""

from __future__ import annotations

import torch

from tritonobs.ops.amax_histogram_update import amax_histogram_update_torch


def amax_histogram_update_triton(
    x: torch.Tensor,
    histogram: torch.Tensor,
    bin_edges: torch.Tensor,
    num_bins: torch.Tensor,
    num_edges: torch.Tensor,
    nonfinite_count: torch.Tensor,
    bins: int,
    skip_zeros: bool,
) -> None:
    """Launcher of :func:`tritonobs.ops.amax_histogram_update.amax_histogram_update` (torch ops)."""
    amax_histogram_update_torch(
        x, histogram, bin_edges, num_bins, num_edges, nonfinite_count, bins, skip_zeros
    )
