"""Triton kernel of ``tritonobs::histogram_mse``: ModelOpt's fake-quantization error of every cut."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import LaunchConfig, cdiv, device_guard, options
from tritonobs.ops.histogram_mse import FP8_MAX, ZERO_AMAX, int_bound

BLOCK_CUTS = 8
BLOCK_CENTERS = 256
NUM_WARPS = 4
# 1.5 * 2**23: adding and subtracting it rounds a float32 |v| < 2**22 to an integer, half to even.
ROUNDER = tl.constexpr(12582912.0)
_FP8_MAX = tl.constexpr(FP8_MAX)
_ZERO_AMAX = tl.constexpr(ZERO_AMAX)


@triton.jit
def round_half_even(v):
    """``torch.round`` of float32 values with ``|v| < 2**22`` (libdevice's rint is not available in
    the interpreter)."""
    return (v + ROUNDER) - ROUNDER


@triton.jit
def round_e4m3(v):
    """``v.to(torch.float8_e4m3fn).to(torch.float32)`` for float32 ``|v| <= 448``: round half to
    even to 3 mantissa bits (normal numbers, exponent >= -6) or to multiples of ``2**-9``
    (subnormals)."""
    a = tl.abs(v)
    exponent = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    quantum = tl.maximum(exponent, -6) - 3
    down = ((127 - quantum) << 23).to(tl.float32, bitcast=True)
    up = ((127 + quantum) << 23).to(tl.float32, bitcast=True)
    rounded = round_half_even(a * down) * up
    return tl.where(v < 0, -rounded, rounded)


@triton.jit
def _histogram_mse_kernel(
    counts_ptr,
    centers_ptr,
    out_ptr,
    n,
    start_bin,
    stride,
    num_cuts,
    bound,
    low,
    FP8: tl.constexpr,
    BLOCK_CUTS: tl.constexpr,
    BLOCK_CENTERS: tl.constexpr,
):
    """``sum_j (fq(c_j) - c_j)**2 * n_j`` for ``BLOCK_CUTS`` cuts ``amax = c[start + stride * k]``.

    Integers: ``s = bound / amax`` (0 if ``amax <= 2**-24``),
    ``fq(c) = clamp(round(c s), low, bound) / s`` (``/ 1`` for a zero amax). FP8:
    ``s = 448 / amax`` (448 for a zero amax), ``fq(c) = e4m3(clamp(c s, -448, 448)) * (1 / s)``.
    Each term in float32 as ModelOpt's ops (``div_rn``, no FMA), the sum in float64.
    """
    offs = tl.program_id(0) * BLOCK_CUTS + tl.arange(0, BLOCK_CUTS)
    valid = offs < num_cuts
    amax = tl.load(centers_ptr + start_bin + offs * stride, mask=valid, other=1.0)
    zero = amax <= _ZERO_AMAX
    if FP8:
        # ModelOpt's ``448.0 / amax`` and ``1 / scale`` are torch's ``reciprocal(t) * scalar``.
        one = tl.full((BLOCK_CUTS,), 1.0, tl.float32)
        scale = tl.math.div_rn(one, tl.where(zero, 1.0, amax)) * _FP8_MAX
        inverse = tl.math.div_rn(one, scale)
    else:
        bound32 = tl.full((BLOCK_CUTS,), bound, tl.float32)
        scale = tl.where(zero, 0.0, tl.math.div_rn(bound32, tl.where(zero, 1.0, amax)))
        divisor = tl.where(zero, 1.0, scale)
    acc = tl.zeros((BLOCK_CUTS,), dtype=tl.float64)
    for start in range(0, n, BLOCK_CENTERS):
        j = start + tl.arange(0, BLOCK_CENTERS)
        inside = j < n
        c = tl.load(centers_ptr + j, mask=inside, other=0.0)[None, :]
        count = tl.load(counts_ptr + j, mask=inside, other=0.0)[None, :]
        if FP8:
            scaled = tl.minimum(tl.maximum(c * scale[:, None], -_FP8_MAX), _FP8_MAX)
            quantized = round_e4m3(scaled) * inverse[:, None]
        else:
            # Clamping to one past the range first keeps |v| < 2**22 and changes no result.
            scaled = tl.minimum(tl.maximum(c * scale[:, None], low - 1.0), bound + 1.0)
            rounded = tl.minimum(tl.maximum(round_half_even(scaled), low), bound)
            quantized = tl.math.div_rn(rounded, divisor[:, None])
        diff = quantized - c
        acc += tl.sum((diff * diff * count).to(tl.float64), axis=1)
    tl.store(out_ptr + offs, acc, mask=valid)


@functools.cache
def launch_config(fp8: bool) -> LaunchConfig:
    """The launch of ``_histogram_mse_kernel``; no FMA contraction: every product and sum rounds as
    torch's float32 ops do."""
    constexprs = {"FP8": fp8, "BLOCK_CUTS": BLOCK_CUTS, "BLOCK_CENTERS": BLOCK_CENTERS}
    return LaunchConfig(_histogram_mse_kernel, constexprs, options(NUM_WARPS))


COMPILE_SPECS = [
    launch_config(fp8).spec(
        {
            "counts_ptr": "*fp32",
            "centers_ptr": "*fp32",
            "out_ptr": "*fp64",
            "n": "i32",
            "start_bin": "i32",
            "stride": "i32",
            "num_cuts": "i32",
            "bound": "fp32",
            "low": "fp32",
        }
    )
    for fp8 in (False, True)
]


def histogram_mse_triton(
    counts: torch.Tensor,
    centers: torch.Tensor,
    start_bin: int,
    stride: int,
    num_bits: int,
    unsigned: bool,
    fp8: bool,
) -> torch.Tensor:
    """Launcher of :func:`tritonobs.ops.histogram_mse.histogram_mse`: all cuts in one launch."""
    n = centers.numel()
    num_cuts = len(range(start_bin, n, stride))
    out = torch.empty(num_cuts, dtype=torch.float64, device=centers.device)
    if num_cuts == 0:
        return out
    bound = int_bound(num_bits, unsigned)
    with device_guard(centers.device):
        _histogram_mse_kernel[(cdiv(num_cuts, BLOCK_CUTS),)](
            counts.to(torch.float32).contiguous(),
            centers.to(torch.float32).contiguous(),
            out,
            n,
            start_bin,
            stride,
            num_cuts,
            bound,
            0.0 if unsigned else -bound,
            **launch_config(fp8).kwargs,
        )
    return out
