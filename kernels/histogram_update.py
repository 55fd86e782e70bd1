"""HistogramObserver's forward step on the device: ``tritonobs::histogram_update``, no host sync.

Four launches, every decision taken on the device from the running range and the batch's partials:

1. ``_histogram_stats_kernel`` (``kernels/histc.py``, ``COUNT``): per-program finite min/max and
   NaN/inf count, fused with the histogram of the batch over the *current* range (counts A). In the
   steady state, where the range does not grow, this is the only pass over the input.
2. ``_histc_kernel`` (``UPDATE``): the re-pass. Every program exits at once unless the range grew
   (or this is the first batch); then it counts the batch over the new range (counts B). Program 0
   writes the new range for the next launch.
3. ``_histogram_rebin_scatter_kernel`` (``kernels/histogram_rebin.py``): exits unless the range
   grew on an initialised histogram; then re-bins the old histogram onto the new range (float64).
4. ``_histogram_update_kernel``: picks, per bin, torch.ao's result for the case that happened.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonobs.kernels.histc import (
    BLOCK,
    NUM_WARPS,
    _decide,
    _histc_kernel,
    _histogram_stats_kernel,
    counting,
    flat_view,
    max_programs,
    stream_grid,
)
from tritonobs.kernels.histogram_rebin import rebin_scatter

# Bins per program of the final combine.
COMBINE_BLOCK = 1024
COMBINE_WARPS = 4


@triton.jit
def _histogram_update_kernel(
    hist_ptr,
    min_ptr,
    max_ptr,
    part_min_ptr,
    part_max_ptr,
    part_nonfinite_ptr,
    n_parts,
    counts_a_ptr,
    counts_b_ptr,
    rebinned_ptr,
    out_hist_ptr,
    out_min_ptr,
    out_max_ptr,
    out_nonfinite_ptr,
    NBINS: tl.constexpr,
    PARTS_P2: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The new histogram, bin by bin, for the case the batch fell in:

    * no finite value: ``hist`` (and the range) unchanged;
    * first batch: ``counts_b`` (the batch over its own range);
    * range unchanged: ``hist + counts_a`` (the fused pass's counts over the current range);
    * range grew: ``float32(rebinned) + counts_b``.

    Program 0 also writes the new range and ``sum(nonfinite)``.
    """
    pid = tl.program_id(0)
    _, _, new_lo, new_hi, uninitialised, has_finite, grew = _decide(
        min_ptr, max_ptr, part_min_ptr, part_max_ptr, n_parts, PARTS_P2
    )
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offs < NBINS
    h = tl.load(hist_ptr + offs, mask=in_bounds, other=0.0)
    counts_a = tl.load(counts_a_ptr + offs, mask=in_bounds, other=0).to(tl.float32)
    counts_b = tl.load(counts_b_ptr + offs, mask=in_bounds, other=0).to(tl.float32)
    rebinned = tl.load(rebinned_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    rebinned = tl.where(uninitialised, 0.0, rebinned)
    out = tl.where(grew, rebinned + counts_b, h + counts_a)
    tl.store(out_hist_ptr + offs, tl.where(has_finite, out, h), mask=in_bounds)
    if pid == 0:
        tl.store(out_min_ptr, new_lo)
        tl.store(out_max_ptr, new_hi)
        parts = tl.arange(0, PARTS_P2)
        nonfinite = tl.load(part_nonfinite_ptr + parts, mask=parts < n_parts, other=0)
        tl.store(out_nonfinite_ptr, tl.sum(nonfinite, axis=0))


def histogram_update_triton(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    upsample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton launcher of ``tritonobs::histogram_update`` (four launches, no host sync).

    Args:
        x: floating-point tensor, any shape and strides.
        histogram: float32 ``[bins]`` running counts.
        min_val: 0-d float32 lower edge (``+inf`` while uninitialised).
        max_val: 0-d float32 upper edge (``-inf`` while uninitialised).
        upsample_rate: sub-bins per old bin when the range grows.

    Returns:
        ``(histogram, min_val, max_val, nonfinite)``, new tensors.
    """
    state = (histogram, min_val, max_val)
    if any(s.dtype != torch.float32 for s in state):
        # The kernels keep float32 statistics; other buffer dtypes round-trip through float32.
        *new_state, nonfinite = histogram_update_triton(
            x, *(s.float() for s in state), upsample_rate
        )
        new_hist, new_min, new_max = (n.to(s.dtype) for n, s in zip(new_state, state, strict=True))
        return new_hist, new_min, new_max, nonfinite
    device = x.device
    flat = flat_view(x)
    histogram = histogram.contiguous()
    bins = histogram.numel()
    programs, tiles = stream_grid(flat.numel(), device)
    parts_p2 = triton.next_power_of_2(max_programs(device))
    # One zeroed workspace: counts over the current range, over the new range, re-binned mass.
    workspace = torch.zeros(3, bins, dtype=torch.int64, device=device)
    counts_a, counts_b = workspace[0], workspace[1]
    rebinned = workspace[2].view(torch.float64)
    partials = torch.empty(2, programs, dtype=torch.float32, device=device)
    part_nonfinite = torch.empty(programs, dtype=torch.int64, device=device)
    new_range = torch.empty(2, dtype=torch.float32, device=device)

    _histogram_stats_kernel[(programs,)](
        flat, flat.numel(), min_val, max_val, partials[0], partials[1], part_nonfinite, counts_a,
        tiles, COUNT=True, BLOCK=BLOCK, num_warps=NUM_WARPS, **counting(bins),
    )  # fmt: skip
    _histc_kernel[(programs,)](
        flat, flat.numel(), min_val, max_val, partials[0], partials[1], programs, counts_b,
        new_range, tiles, UPDATE=True, PARTS_P2=parts_p2, BLOCK=BLOCK, num_warps=NUM_WARPS,
        **counting(bins),
    )  # fmt: skip
    rebin_scatter(histogram, min_val, max_val, new_range[0], new_range[1], rebinned, upsample_rate)
    out_hist = torch.empty_like(histogram)
    out_min = torch.empty_like(min_val)
    out_max = torch.empty_like(max_val)
    nonfinite = torch.empty((), dtype=torch.int64, device=device)
    _histogram_update_kernel[(triton.cdiv(bins, COMBINE_BLOCK),)](
        histogram, min_val, max_val, partials[0], partials[1], part_nonfinite, programs,
        counts_a, counts_b, rebinned, out_hist, out_min, out_max, nonfinite, NBINS=bins,
        PARTS_P2=parts_p2, BLOCK=COMBINE_BLOCK, num_warps=COMBINE_WARPS,
    )  # fmt: skip
    return out_hist, out_min, out_max, nonfinite


COMPILE_SPECS = [
    (
        _histogram_update_kernel,
        {
            "hist_ptr": "*fp32",
            "min_ptr": "*fp32",
            "max_ptr": "*fp32",
            "part_min_ptr": "*fp32",
            "part_max_ptr": "*fp32",
            "part_nonfinite_ptr": "*i64",
            "n_parts": "i32",
            "counts_a_ptr": "*i64",
            "counts_b_ptr": "*i64",
            "rebinned_ptr": "*fp64",
            "out_hist_ptr": "*fp32",
            "out_min_ptr": "*fp32",
            "out_max_ptr": "*fp32",
            "out_nonfinite_ptr": "*i64",
            "NBINS": "constexpr",
            "PARTS_P2": "constexpr",
            "BLOCK": "constexpr",
        },
        {"NBINS": 2048, "PARTS_P2": 1024, "BLOCK": COMBINE_BLOCK},
        {"num_warps": COMBINE_WARPS},
    )
]
