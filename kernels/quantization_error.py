"""Triton kernel of ``tritonobs::quantization_error``: torch.ao's L2 error of K candidate ranges."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import LaunchConfig, cdiv, device_guard, options
from tritonobs.ops.quantization_error import quantization_error_torch

BLOCK_K = 8
BLOCK_BINS = 256
NUM_WARPS = 4


@triton.jit
def _cube_difference(delta_begin, delta_end):
    # torch.ao's _get_norm without the density: (end^3 - begin^3) / 3, in its operation order.
    return tl.math.div_rn(
        delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin, 3.0
    )


@triton.jit
def _floor_div(a, b):
    # torch.div(a, b, rounding_mode="floor") on float32 is the floor of the exact quotient. The
    # float64 quotient of two float32 values never rounds onto an integer it is not (for quotients
    # below 2**28), so its floor is the same.
    return tl.floor(a.to(tl.float64) / b.to(tl.float64)).to(tl.float32)


@triton.jit
def _quantization_error_kernel(
    hist_ptr,
    min_ptr,
    max_ptr,
    start_ptr,
    end_ptr,
    out_ptr,
    bins,
    K,
    dst_nbins,
    BLOCK_K: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    """L2 quantization error of ``BLOCK_K`` candidate ranges over all ``bins`` source bins.

    For candidate ``(s, e)``, with ``w = (max - min) / bins`` and ``d = w * (e - s + 1) / dst_nbins``
    (float64, like torch.ao's Python scalars, then float32), source bin ``i`` spans
    ``[b, b + w)`` with ``b = (i - s) * w``; ``j0 = clamp(floor(b / d))`` and
    ``j1 = clamp(floor((b + w) / d))`` are the destination bins of its ends, with centres
    ``c0 = (j0 + 1/2) d`` and ``c1 = (j1 + 1/2) d``, and its density is ``rho = hist[i] / w``::

        err = sum_i rho * ([d/2]^3 - [b - c0]^3) / 3                 (part in bin j0)
                  + rho * (j1 - j0 - 1) * ([d/2]^3 - [-d/2]^3) / 3   (whole bins between)
                  + rho * ([b + w - c1]^3 - [-d/2]^3) / 3            (part in bin j1)

    Each term is rounded in float32 in torch.ao's order (no FMA contraction: launch with
    ``enable_fp_fusion=False``); the sum over ``i`` is a tree sum. ``err = 0`` where ``max == min``.
    """
    pid = tl.program_id(0)
    offs_k = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    start = tl.load(start_ptr + offs_k, mask=mask_k, other=0)
    end = tl.load(end_ptr + offs_k, mask=mask_k, other=0)
    lo = tl.load(min_ptr).to(tl.float64)
    hi = tl.load(max_ptr).to(tl.float64)

    width64 = (hi - lo) / bins
    # An empty range (min == max) has error 0, as in torch.ao; computing it with a width of 1
    # keeps the lanes finite.
    empty = width64 == 0.0
    width64 = tl.where(empty, 1.0, width64)
    dst_width64 = width64 * (end - start + 1).to(tl.float64) / dst_nbins
    last_dst = (dst_nbins - 1).to(tl.float32)
    width = width64.to(tl.float32)
    dst_width = dst_width64.to(tl.float32)[:, None]
    half = (dst_width64 / 2).to(tl.float32)[:, None]
    # The middle term's factor is the same for every source bin of a candidate.
    whole_bin = _cube_difference(-half, half)

    acc = tl.zeros((BLOCK_K, BLOCK_BINS), dtype=tl.float32)
    for first in range(0, bins, BLOCK_BINS):
        offs_b = first + tl.arange(0, BLOCK_BINS)
        mask_b = offs_b < bins
        density = tl.math.div_rn(tl.load(hist_ptr + offs_b, mask=mask_b, other=0.0), width)
        density = density[None, :]

        src_begin = (offs_b[None, :] - start[:, None]).to(tl.float32) * width
        src_end = src_begin + width
        dst_of_begin = tl.minimum(tl.maximum(_floor_div(src_begin, dst_width), 0.0), last_dst)
        dst_of_end = tl.minimum(tl.maximum(_floor_div(src_end, dst_width), 0.0), last_dst)

        begin_center = (dst_of_begin + 0.5) * dst_width
        norm = density * _cube_difference(src_begin - begin_center, half)
        norm = norm + (dst_of_end - dst_of_begin - 1.0) * (density * whole_bin)
        end_center = dst_of_end * dst_width + half
        norm = norm + density * _cube_difference(-half, src_end - end_center)
        acc += tl.where(mask_k[:, None] & mask_b[None, :], norm, 0.0)

    errors = tl.where(empty, 0.0, tl.sum(acc, axis=1))
    tl.store(out_ptr + offs_k, errors, mask=mask_k)


# The launch and its COMPILE_SPECS entry; no FMA contraction, so the errors round as the torch
# reference's.
CONFIG = LaunchConfig(
    _quantization_error_kernel,
    {"BLOCK_K": BLOCK_K, "BLOCK_BINS": BLOCK_BINS},
    options(NUM_WARPS),
)
COMPILE_SPECS = [
    CONFIG.spec(
        {
            "hist_ptr": "*fp32",
            "min_ptr": "*fp32",
            "max_ptr": "*fp32",
            "start_ptr": "*i64",
            "end_ptr": "*i64",
            "out_ptr": "*fp32",
            "bins": "i32",
            "K": "i32",
            "dst_nbins": "i32",
        }
    )
]


def quantization_error_triton(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    start_bins: torch.Tensor,
    end_bins: torch.Tensor,
    dst_nbins: int,
) -> torch.Tensor:
    """Launcher of :func:`tritonobs.ops.quantization_error.quantization_error`: one launch, no sync.

    Args:
        histogram: ``[bins]``, float32 (other dtypes run the torch reference).
        min_val: 0-d float32.
        max_val: 0-d float32.
        start_bins: int64 ``[K]``.
        end_bins: int64 ``[K]``.
        dst_nbins: number of quantization levels.

    Returns:
        float32 ``[K]`` errors.
    """
    if histogram.dtype != torch.float32:
        # The kernel is float32; a float64 histogram (factory_kwargs) takes the torch reference.
        return quantization_error_torch(
            histogram, min_val, max_val, start_bins, end_bins, dst_nbins
        )
    k = start_bins.numel()
    errors = torch.empty(k, dtype=torch.float32, device=histogram.device)
    if k == 0:
        return errors
    with device_guard(histogram.device):
        _quantization_error_kernel[(cdiv(k, BLOCK_K),)](
            histogram.contiguous(),
            min_val,
            max_val,
            start_bins.contiguous(),
            end_bins.contiguous(),
            errors,
            histogram.numel(),
            k,
            dst_nbins,
            **CONFIG.kwargs,
        )
    return errors
