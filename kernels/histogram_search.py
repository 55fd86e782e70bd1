"""Triton launcher of ``tritonobs::histogram_search``: errors and the stopping point on the device.

The walk of candidate ranges runs on the host (:func:`tritonobs.ops.histogram_search.search_path`,
from one download of the cumulative histogram); each batch of candidates costs one launch of the
error sweep (``_quantization_error_kernel``), one launch of ``_histogram_search_kernel`` and one
read of a stop flag. The chosen bins stay on the device.
"""

from __future__ import annotations

import itertools
import math

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import LaunchConfig, device_guard, options
from tritonobs.kernels.quantization_error import quantization_error_triton
from tritonobs.ops.histogram_search import histogram_search_torch, range_of_bins, search_path

BLOCK = 1024
NUM_WARPS = 4
# The first batch is small because the walk usually stops within a few moves; on a GPU a longer
# batch costs little and each batch costs a host round-trip, so later batches grow fast.
FIRST_BATCH = 8
BATCH_GROWTH = 8


@triton.jit
def _histogram_search_kernel(
    err_ptr,
    bounds_ptr,
    K,
    norm_min_ptr,
    chosen_ptr,
    stopped_ptr,
    BLOCK: tl.constexpr,
):
    """Folds a batch of candidates, in walk order, into the search state (one program).

    With ``e`` the batch's errors and ``e[-1] = norm_min`` (the last accepted error), the walk
    stops at ``f = min{k : e[k] > e[k - 1]}`` (``K`` if none): candidates ``0..f-1`` are accepted,
    so ``chosen`` becomes ``bounds[:, f - 1]`` and ``norm_min`` becomes ``e[f - 1]`` when
    ``f > 0``, and ``stopped = f < K``. ``bounds`` is int64 ``[2, K]`` (start bins, end bins).
    """
    norm_min = tl.load(norm_min_ptr)
    first = tl.zeros((), dtype=tl.int32) + K
    for offset in range(0, K, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        mask = offs < K
        err = tl.load(err_ptr + offs, mask=mask, other=0.0)
        prev = tl.load(err_ptr + offs - 1, mask=mask & (offs > 0), other=0.0)
        prev = tl.where(offs == 0, norm_min, prev)
        first = tl.minimum(first, tl.min(tl.where(mask & (err > prev), offs, K)))
    last = first - 1
    if last >= 0:
        tl.store(chosen_ptr, tl.load(bounds_ptr + last))
        tl.store(chosen_ptr + 1, tl.load(bounds_ptr + K + last))
        tl.store(norm_min_ptr, tl.load(err_ptr + last))
    tl.store(stopped_ptr, (first < K).to(tl.int32))


# The launch and its COMPILE_SPECS entry.
CONFIG = LaunchConfig(_histogram_search_kernel, {"BLOCK": BLOCK}, options(NUM_WARPS))
COMPILE_SPECS = [
    CONFIG.spec(
        {
            "err_ptr": "*fp32",
            "bounds_ptr": "*i64",
            "K": "i32",
            "norm_min_ptr": "*fp32",
            "chosen_ptr": "*i64",
            "stopped_ptr": "*i32",
        }
    )
]


def histogram_search_triton(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher of :func:`tritonobs.ops.histogram_search.histogram_search`.

    Host round-trips: the cumulative histogram once, then one stop flag per batch of candidates
    (none for a batch that ends the walk).

    Args:
        histogram: ``[bins]``, float32 (other dtypes run the torch reference).
        min_val: 0-d float32.
        max_val: 0-d float32.
        dst_nbins: number of quantization levels.

    Returns:
        ``(new_min, new_max)``, 0-d float32 on the histogram's device.
    """
    if histogram.dtype != torch.float32:
        # The kernels are float32; a float64 histogram (factory_kwargs) takes the torch reference.
        return histogram_search_torch(histogram, min_val, max_val, dst_nbins)
    device = histogram.device
    bins = histogram.numel()
    summary = torch.cat([torch.cumsum(histogram, dim=0), torch.sum(histogram)[None]]).tolist()
    path = search_path(summary[:-1], summary[-1])

    chosen = torch.tensor([0, bins - 1], dtype=torch.int64, device=device)
    norm_min = torch.full((), math.inf, dtype=torch.float32, device=device)
    stopped = torch.zeros((), dtype=torch.int32, device=device)
    batch = FIRST_BATCH
    while candidates := list(itertools.islice(path, batch)):
        bounds = torch.tensor(list(zip(*candidates, strict=True)), dtype=torch.int64, device=device)
        errors = quantization_error_triton(
            histogram, min_val, max_val, bounds[0], bounds[1], dst_nbins
        )
        with device_guard(device):
            _histogram_search_kernel[(1,)](
                errors, bounds, len(candidates), norm_min, chosen, stopped, **CONFIG.kwargs
            )
        if len(candidates) < batch or stopped.item():
            break
        batch *= BATCH_GROWTH
    return range_of_bins(histogram, min_val, max_val, chosen[0], chosen[1])
