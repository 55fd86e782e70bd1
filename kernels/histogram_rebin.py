"""Re-binning a histogram onto a wider range on the device: ``tritonobs::histogram_rebin``.

torch.ao's algorithm (see :mod:`tritonobs.ops.histogram_rebin`): each old bin is split into
``UPSAMPLE`` parts of ``hist[i] / UPSAMPLE`` at the mid-points ``linspace(orig_min, orig_max, M + 1)[j]
+ step / 2`` (``M = NBINS * UPSAMPLE``, ``step = (orig_max - orig_min) / M``), and part ``j`` goes to
the new bin ``k`` with ``edge[k] <= mid[j] < edge[k + 1]``, ``edge = linspace(new_min, new_max,
NBINS + 1)``, clamped to ``[0, NBINS - 1]``. Both ``linspace`` are computed as torch's CUDA kernel
does (``start + step * i`` in the first half, ``end - step * (steps - 1 - i)`` in the second), so
the bucket is found without a search: an estimate ``(mid - new_min) * NBINS / (new_max - new_min)``
corrected by one comparison with each neighbouring edge.

The parts are summed with float64 atomics: the sums of float32 parts are exact there, so the order
of the atomics does not change the result, which is rounded once to float32 at the end (torch.ao's
``bincount`` adds float32 in index order; the two agree whenever those sums are exact).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import (
    LaunchConfig,
    cdiv,
    device_guard,
    next_power_of_2,
    options,
    workspace,
)

# Old bins per program of the scatter: a [BLOCK_BINS, UPSAMPLE] tile, 16 programs for 2048 bins.
BLOCK_BINS = 128
# New bins per program of the elementwise finish.
BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _linspace_at(start, end, i, STEPS: tl.constexpr):
    """``torch.linspace(start, end, STEPS)[i]`` as torch's CUDA kernel computes it (float32)."""
    step = tl.math.div_rn(end - start, STEPS - 1.0)
    return tl.where(
        i < STEPS // 2, start + step * i.to(tl.float32), end - step * (STEPS - 1 - i).to(tl.float32)
    )


@triton.jit
def _rebin_scatter_rows(
    hist_ptr,
    orig_lo,
    orig_hi,
    new_lo,
    new_hi,
    acc_ptr,
    block,
    NBINS: tl.constexpr,
    UPSAMPLE: tl.constexpr,
    UP_P2: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    """``acc[bucket(mid[i * UPSAMPLE + s])] += hist[i] / UPSAMPLE`` (float64) for the old bins ``i``
    of block ``block``: torch.ao's upscale of an initialised histogram onto a range that moved.

    A single-point old range ``[c, c]`` puts the block's mass into ``c``'s new bin,
    ``trunc((c - new_lo) * NBINS / (new_hi - new_lo))`` (torch.ao's ``histc`` of ``c``).
    """
    rows = block * BLOCK_BINS + tl.arange(0, BLOCK_BINS)
    h = tl.load(hist_ptr + rows, mask=rows < NBINS, other=0.0)
    if orig_lo == orig_hi:
        point = tl.math.div_rn((orig_lo - new_lo) * NBINS, new_hi - new_lo)
        b = tl.minimum(point.to(tl.int32), NBINS - 1)
        tl.atomic_add(acc_ptr + b, tl.sum(h.to(tl.float64), axis=0), sem="relaxed")
    else:
        j = rows[:, None] * UPSAMPLE + tl.arange(0, UP_P2)[None, :]
        valid = (rows[:, None] < NBINS) & (tl.arange(0, UP_P2)[None, :] < UPSAMPLE)
        sub_bin = tl.math.div_rn(orig_hi - orig_lo, NBINS * UPSAMPLE * 1.0)
        mid = _linspace_at(orig_lo, orig_hi, j, NBINS * UPSAMPLE + 1) + 0.5 * sub_bin
        t = tl.math.div_rn((mid - new_lo) * NBINS, new_hi - new_lo)
        k = tl.minimum(tl.maximum(t, 0.0).to(tl.int32), NBINS - 1)
        k = tl.where(mid < _linspace_at(new_lo, new_hi, k, NBINS + 1), k - 1, k)
        k = tl.where(mid >= _linspace_at(new_lo, new_hi, k + 1, NBINS + 1), k + 1, k)
        k = tl.minimum(tl.maximum(k, 0), NBINS - 1)
        part = tl.math.div_rn(h, UPSAMPLE * 1.0).to(tl.float64)
        tl.atomic_add(
            acc_ptr + k, tl.broadcast_to(part[:, None], k.shape), mask=valid, sem="relaxed"
        )


@triton.jit
def _histogram_rebin_scatter_kernel(
    hist_ptr,
    orig_min_ptr,
    orig_max_ptr,
    new_min_ptr,
    new_max_ptr,
    acc_ptr,
    NBINS: tl.constexpr,
    UPSAMPLE: tl.constexpr,
    UP_P2: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    """:func:`_rebin_scatter_rows` of block ``pid`` when the old range is initialised and differs
    from the new one (every program exits at once otherwise)."""
    orig_lo = tl.load(orig_min_ptr)
    orig_hi = tl.load(orig_max_ptr)
    new_lo = tl.load(new_min_ptr)
    new_hi = tl.load(new_max_ptr)
    initialised = (orig_lo != float("inf")) & (orig_hi != float("-inf"))
    moved = (new_lo != orig_lo) | (new_hi != orig_hi)
    if initialised & moved:
        _rebin_scatter_rows(
            hist_ptr,
            orig_lo,
            orig_hi,
            new_lo,
            new_hi,
            acc_ptr,
            tl.program_id(0),
            NBINS,
            UPSAMPLE,
            UP_P2,
            BLOCK_BINS,
        )


@triton.jit
def _histogram_rebin_kernel(
    hist_ptr,
    orig_min_ptr,
    orig_max_ptr,
    new_min_ptr,
    new_max_ptr,
    acc_ptr,
    out_ptr,
    NBINS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``out = hist`` if the range is unchanged, ``0`` if the old one is uninitialised, else
    ``float32(acc)`` (the scatter's sums); ``acc = 0`` again (a workspace)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offs < NBINS
    orig_lo = tl.load(orig_min_ptr)
    orig_hi = tl.load(orig_max_ptr)
    same = (tl.load(new_min_ptr) == orig_lo) & (tl.load(new_max_ptr) == orig_hi)
    initialised = (orig_lo != float("inf")) & (orig_hi != float("-inf"))
    h = tl.load(hist_ptr + offs, mask=in_bounds, other=0.0)
    rebinned = tl.load(acc_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    out = tl.where(same, h, tl.where(initialised, rebinned, 0.0))
    tl.store(out_ptr + offs, out, mask=in_bounds)
    tl.store(acc_ptr + offs, tl.zeros((BLOCK,), tl.float64), mask=in_bounds)


def scatter_constexprs(bins: int, upsample_rate: int) -> dict[str, int]:
    """The constexprs of :func:`_rebin_scatter_rows` (``cdiv(bins, BLOCK_BINS)`` blocks)."""
    return {
        "NBINS": bins,
        "UPSAMPLE": upsample_rate,
        "UP_P2": next_power_of_2(upsample_rate),
        "BLOCK_BINS": BLOCK_BINS,
    }


@functools.cache
def scatter_config(bins: int, upsample_rate: int) -> LaunchConfig:
    """The launch of ``_histogram_rebin_scatter_kernel``."""
    constexprs = scatter_constexprs(bins, upsample_rate)
    return LaunchConfig(_histogram_rebin_scatter_kernel, constexprs, options(NUM_WARPS))


@functools.cache
def finish_config(bins: int) -> LaunchConfig:
    """The launch of ``_histogram_rebin_kernel``."""
    return LaunchConfig(
        _histogram_rebin_kernel, {"NBINS": bins, "BLOCK": BLOCK}, options(NUM_WARPS)
    )


def histogram_rebin_triton(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: torch.Tensor,
    new_max: torch.Tensor,
    upsample_rate: int,
) -> torch.Tensor:
    """Triton launcher of ``tritonobs::histogram_rebin`` (two launches, no host sync).

    The scatter's float64 sums go to a per-device workspace that the finish re-zeroes.

    Args:
        histogram: float32 ``[bins]``.
        orig_min: 0-d float32, the histogram's lower edge.
        orig_max: 0-d float32, the histogram's upper edge.
        new_min: 0-d float32 new lower edge.
        new_max: 0-d float32 new upper edge.
        upsample_rate: sub-bins per old bin.

    Returns:
        float32 ``[bins]``, the histogram over the new range.
    """
    if histogram.dtype != torch.float32:
        # The kernels keep float32 statistics; other buffer dtypes round-trip through float32.
        scalars = (v.float() for v in (orig_min, orig_max, new_min, new_max))
        out = histogram_rebin_triton(histogram.float(), *scalars, upsample_rate)
        return out.to(histogram.dtype)
    orig_min, orig_max, new_min, new_max = (
        v.to(torch.float32) for v in (orig_min, orig_max, new_min, new_max)
    )
    histogram = histogram.contiguous()
    bins = histogram.numel()
    device = histogram.device
    acc = workspace(device, "histogram_rebin_acc", bins, torch.float64)
    out = torch.empty_like(histogram)
    with device_guard(device):
        _histogram_rebin_scatter_kernel[(cdiv(bins, BLOCK_BINS),)](
            histogram, orig_min, orig_max, new_min, new_max, acc,
            **scatter_config(bins, upsample_rate).kwargs,
        )  # fmt: skip
        _histogram_rebin_kernel[(cdiv(bins, BLOCK),)](
            histogram, orig_min, orig_max, new_min, new_max, acc, out, **finish_config(bins).kwargs
        )
    return out


_SCALARS = {
    "hist_ptr": "*fp32",
    "orig_min_ptr": "*fp32",
    "orig_max_ptr": "*fp32",
    "new_min_ptr": "*fp32",
    "new_max_ptr": "*fp32",
    "acc_ptr": "*fp64",
}
COMPILE_SPECS = [
    scatter_config(2048, 16).spec(_SCALARS),
    finish_config(2048).spec({**_SCALARS, "out_ptr": "*fp32"}),
]
