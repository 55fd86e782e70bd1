"""Triton kernel of ``tritonobs::weight_mse_sweep``: llm-compressor's error of each (step, group)."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import LaunchConfig, device_guard, next_power_of_2, options
from tritonobs.kernels.histogram_mse import round_e4m3, round_half_even
from tritonobs.ops.weight_mse_sweep import qrange, weight_mse_sweep_torch

MAX_BLOCK = 1024
NUM_WARPS = 4
# Weight dtypes the kernel computes in (others take the torch reference).
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


@triton.jit
def _to_dtype(v, DTYPE: tl.constexpr):
    # Round float32 values to the weight dtype and back (ties to even), as each torch op of a
    # bfloat16/float16 tensor rounds its result. bfloat16 by its bits: the interpreter's cast
    # truncates.
    if DTYPE == 1:
        bits = v.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        return bits.to(tl.float32, bitcast=True)
    elif DTYPE == 2:
        return v.to(tl.float16).to(tl.float32)
    else:
        return v


@triton.jit
def _weight_mse_sweep_kernel(
    groups_ptr,
    scales_ptr,
    zeros_ptr,
    out_ptr,
    rows,
    n,
    q_min,
    q_max,
    norm,
    DTYPE: tl.constexpr,
    FP8: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    LIBDEVICE_POW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Error of group ``g = program_id(0)`` at step ``s = program_id(1)``, in the weight dtype.

    With ``r()`` the rounding to the weight dtype after each operation::

        t = clamp(r(r(x / scale) + zp), r(q_min), r(q_max))
        t = round_half_even(t)  or  e4m3(t)                (integers / FP8)
        q = r(r(t - zp) * scale)
        error = sum_j r(r(|q - x|) ** norm)                 (float32 sum, rounded at the end)

    (symmetric: no ``zp`` terms). ``x ** norm`` is libdevice's ``pow`` on the GPU and
    ``exp2(norm * log2(x))`` in the interpreter (within an ulp or so of torch's ``pow``).
    """
    g = tl.program_id(0)
    s = tl.program_id(1)
    scale = tl.load(scales_ptr + s * rows + g)
    zp = tl.load(zeros_ptr + s * rows + g)
    low = _to_dtype(tl.full((BLOCK,), q_min, tl.float32), DTYPE)
    high = _to_dtype(tl.full((BLOCK,), q_max, tl.float32), DTYPE)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < n
        x = tl.load(groups_ptr + g * n + offs, mask=inside, other=0.0).to(tl.float32)
        t = _to_dtype(tl.math.div_rn(x, scale), DTYPE)
        if not SYMMETRIC:
            t = _to_dtype(t + zp, DTYPE)
        # Compares, not tl.minimum/maximum: a NaN (a zero range's asymmetric zero point) stays.
        t = tl.where(t < low, low, tl.where(t > high, high, t))
        if FP8:
            t = _to_dtype(round_e4m3(t), DTYPE)
        else:
            t = round_half_even(t)
        if not SYMMETRIC:
            t = _to_dtype(t - zp, DTYPE)
        q = _to_dtype(t * scale, DTYPE)
        diff = _to_dtype(tl.abs(q - x), DTYPE)
        if LIBDEVICE_POW:
            power = tl.extra.cuda.libdevice.pow(diff, norm)
        else:
            safe = tl.where(diff == 0, 1.0, diff)
            power = tl.where(diff == 0, 0.0, tl.math.exp2(norm * tl.math.log2(safe)))
        acc += tl.where(inside, _to_dtype(power, DTYPE), 0.0)
    tl.store(out_ptr + s * rows + g, _to_dtype(tl.sum(acc), DTYPE))


@functools.cache
def launch_config(
    dtype: torch.dtype, fp8: bool, symmetric: bool, libdevice_pow: bool, n: int
) -> LaunchConfig:
    """The launch of ``_weight_mse_sweep_kernel`` over groups of ``n`` weights of ``dtype``."""
    constexprs = {
        "DTYPE": DTYPES[dtype],
        "FP8": fp8,
        "SYMMETRIC": symmetric,
        "LIBDEVICE_POW": libdevice_pow,
        "BLOCK": min(MAX_BLOCK, next_power_of_2(n)),
    }
    return LaunchConfig(_weight_mse_sweep_kernel, constexprs, options(NUM_WARPS))


COMPILE_SPECS = [
    launch_config(dtype, fp8, symmetric, True, MAX_BLOCK).spec(
        {
            "groups_ptr": f"*{name}",
            "scales_ptr": "*fp32",
            "zeros_ptr": "*fp32",
            "out_ptr": "*fp32",
            "rows": "i32",
            "n": "i32",
            "q_min": "fp32",
            "q_max": "fp32",
            "norm": "fp32",
        }
    )
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16"), (torch.float16, "fp16"))
    for fp8 in (False, True)
    for symmetric in (True, False)
]


def weight_mse_sweep_triton(
    groups: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    num_bits: int,
    fp8: bool,
    symmetric: bool,
    norm: float,
) -> torch.Tensor:
    """Launcher of :func:`tritonobs.ops.weight_mse_sweep.weight_mse_sweep`: one launch, a program
    per (group, step). float64 weights take the torch reference."""
    if groups.dtype not in DTYPES:
        return weight_mse_sweep_torch(groups, scales, zero_points, num_bits, fp8, symmetric, norm)
    steps, rows = scales.shape
    n = groups.shape[1]
    out = torch.empty(steps, rows, dtype=torch.float32, device=groups.device)
    if steps == 0 or rows == 0:
        return out.to(groups.dtype)
    q_min, q_max = qrange(num_bits, fp8)
    with device_guard(groups.device):
        _weight_mse_sweep_kernel[(rows, steps)](
            groups.contiguous(),
            scales.to(torch.float32).contiguous(),
            zero_points.to(torch.float32).contiguous(),
            out,
            rows,
            n,
            q_min,
            q_max,
            # torch's pow rounds a Python exponent to the tensor's dtype (2.4 is 2.40625 in
            # bfloat16) for 16-bit floats, to float32 otherwise.
            float(torch.tensor(norm, dtype=groups.dtype)),
            **launch_config(groups.dtype, fp8, symmetric, groups.device.type == "cuda", n).kwargs,
        )
    return out.to(groups.dtype)
