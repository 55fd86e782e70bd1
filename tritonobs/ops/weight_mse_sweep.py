"""``tritonobs::weight_mse_sweep``: llm-compressor's MSE weight search, every grid step of a batch at once.

llm-compressor 0.14.0.1's ``memoryless_mse`` observer (CPU path, ``_grid_search_mse``) shrinks each
group's ``[min, max]`` by ``p = 1 - i / grid`` for ``i = 0, 1, ...``, computes the candidate
``(scale, zero_point)`` with compressed-tensors' ``calculate_qparams`` (:func:`qparams_from_range`
here), fake-quantizes the group and measures ``sum |fq(x) - x| ** norm``. This op computes that
error for a batch of candidates ``[steps, groups]`` in one call, with llm-compressor's operations
and dtypes per element (in the weight's dtype: a bfloat16 weight has bfloat16 scales and errors)::

    fq(x) = (round_or_cast(clamp(x / scale + zp, qmin, qmax)) - zp) * scale
    error[s, g] = sum_j |fq(x[g, j]) - x[g, j]| ** norm

``round_or_cast`` is round-half-even for integers and a cast to FP8 E4M3 for floats; a symmetric
scheme has ``zp = 0`` (adding and subtracting it changes nothing). Each group's sum runs over its
own row, as llm-compressor's ``sum(dim=(0, -1))`` does; the host replays the early stop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from tritonobs.ops._dispatch import define_op

FP8_MAX = 448.0

# Elements per block of the torch reference: a [steps, rows, group] tile that stays in cache.
BLOCK_ELEMENTS = 1 << 19


def qrange(num_bits: int, fp8: bool) -> tuple[float, float]:
    """compressed-tensors' ``(q_min, q_max)``: ``(-2^(b-1), 2^(b-1) - 1)``, or +-448 for FP8."""
    if fp8:
        return -FP8_MAX, FP8_MAX
    half = 2.0**num_bits / 2
    return -half, half - 1


def zero_point_dtype(num_bits: int, fp8: bool) -> torch.dtype:
    """compressed-tensors' default ``zp_dtype``: int8/int16/int32 by bits, FP8 for floats."""
    if fp8:
        return torch.float8_e4m3fn
    if num_bits <= 8:
        return torch.int8
    return torch.int16 if num_bits <= 16 else torch.int32


def qparams_from_range(
    min_vals: torch.Tensor, max_vals: torch.Tensor, num_bits: int, fp8: bool, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """compressed-tensors 0.19's ``calculate_qparams`` (no global scale, no ``scale_dtype``).

    The range is widened to hold 0. Symmetric: ``scale = max(|min|, |max|) / (range / 2)``, zero
    point 0; asymmetric: ``scale = (max - min) / range``, ``zp = clamp(q_min - min / scale)``.
    Zero scales become the scale dtype's epsilon; the zero point is rounded and cast to
    :func:`zero_point_dtype`. Operations and dtypes are compressed-tensors' (the scale has the
    dtype of ``min_vals``).

    Returns:
        ``(scale, zero_point)`` of ``min_vals``' shape (``[1]`` for a 0-d input).
    """
    min_vals = torch.min(min_vals, torch.zeros_like(min_vals))
    max_vals = torch.max(max_vals, torch.zeros_like(max_vals))
    device = min_vals.device
    q_min, q_max = (torch.tensor(v, device=device) for v in qrange(num_bits, fp8))
    bit_range = q_max - q_min
    if symmetric:
        max_abs = torch.max(torch.abs(min_vals), torch.abs(max_vals))
        scales = max_abs / (bit_range.to(max_abs.dtype) / 2)
        zero_points = torch.zeros(scales.shape, device=device, dtype=min_vals.dtype)
    else:
        scales = (max_vals - min_vals) / bit_range.to(max_vals.dtype)
        zero_points = torch.clamp(q_min - (min_vals / scales), q_min, q_max)
    eps = torch.tensor(torch.finfo(scales.dtype).eps, dtype=scales.dtype, device=device)
    scales = torch.where(scales == 0, eps, scales)
    zp_dtype = zero_point_dtype(num_bits, fp8)
    if zp_dtype.is_floating_point:
        info = torch.finfo(zp_dtype)
        zero_points = torch.clamp(zero_points, info.min, info.max).to(zp_dtype)
    else:
        iinfo = torch.iinfo(zp_dtype)
        zero_points = torch.round(torch.clamp(zero_points, iinfo.min, iinfo.max)).to(zp_dtype)
    if scales.ndim == 0:
        return scales.reshape(1), zero_points.reshape(1)
    return scales, zero_points


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    num_bits: int,
    fp8: bool,
) -> torch.Tensor:
    """compressed-tensors' ``_quantize_dequantize`` in ``x``'s dtype (``zero_point=None``: 0)."""
    q_min, q_max = qrange(num_bits, fp8)
    scaled = x / scale
    if zero_point is not None:
        scaled += zero_point.to(x.dtype)
    scaled.clamp_(q_min, q_max)
    quantized = scaled.to(torch.float8_e4m3fn).to(x.dtype) if fp8 else scaled.round_()
    if zero_point is not None:
        quantized -= zero_point.to(scale.dtype)
    return quantized.mul_(scale)


def weight_mse_sweep_torch(
    groups: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    num_bits: int,
    fp8: bool,
    symmetric: bool,
    norm: float,
) -> torch.Tensor:
    """Torch reference of :func:`weight_mse_sweep`, in cache-sized ``[steps, rows, group]`` tiles.

    Bit for bit llm-compressor's values on its ``[1, groups, n]`` layout: every operation but
    ``pow`` is exactly rounded, and ``pow`` is torch's vectorized one except on the last
    ``numel % vector`` elements of llm-compressor's tensor, where torch falls back to the scalar
    ``pow``. So every tile but the last holds a multiple of 64 elements per step, the last one ends
    where llm-compressor's tensor ends and takes ``torch.pow`` itself, and each step's sum runs on
    the same ``[1, rows, n]`` layout.
    """
    steps, rows = scales.shape
    n = groups.shape[1]
    errors = torch.empty(steps, rows, dtype=groups.dtype, device=groups.device)
    align = 64 // math.gcd(n, 64)
    tile_rows = max(align, BLOCK_ELEMENTS // max(n * steps, 1) // align * align)
    for start in range(0, rows, tile_rows):
        part = slice(start, start + tile_rows)
        x = groups[part]
        zp = None if symmetric else zero_points[:, part, None]
        error = fake_quantize(x, scales[:, part, None], zp, num_bits, fp8).sub_(x).abs_()
        last = start + tile_rows >= rows
        for step in range(steps):
            power = error[step].pow_(norm) if last else _pow(error[step], norm)
            # llm-compressor's reduction on its [1, groups, n] layout: the same summation order.
            errors[step, part] = torch.sum(power[None], dim=(0, -1))
    return errors


@functools.cache
def pow_table(dtype: torch.dtype, norm: float, device: torch.device) -> torch.Tensor:
    """``v ** norm`` for every non-negative value ``v`` of a 16-bit float dtype, by bit pattern.

    Computed by ``torch.pow`` on a contiguous tensor of all of them (a multiple of the vector
    width: the vectorized ``pow``), so each entry is what ``torch.pow`` returns for that value.
    """
    patterns = torch.arange(1 << 15, dtype=torch.int16, device=device)
    return torch.pow(patterns.view(dtype), norm)


def _pow(error: torch.Tensor, norm: float) -> torch.Tensor:
    # |error| ** norm; for float16/bfloat16 a look-up of the bit pattern (exact, 3x cheaper).
    if error.dtype in (torch.float16, torch.bfloat16):
        table = pow_table(error.dtype, norm, error.device)
        index = error.view(torch.int16).to(torch.int32)
        return table.index_select(0, index.reshape(-1)).reshape(error.shape)
    return error.pow_(norm)


def _weight_mse_sweep_fake(groups, scales, zero_points, num_bits, fp8, symmetric, norm):
    return scales.new_empty(scales.shape, dtype=groups.dtype)


@define_op(
    weight_mse_sweep_torch,
    "weight_mse_sweep:weight_mse_sweep_triton",
    _weight_mse_sweep_fake,
)
def weight_mse_sweep(
    groups: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    num_bits: int,
    fp8: bool,
    symmetric: bool,
    norm: float,
) -> torch.Tensor:
    """llm-compressor's quantization error of each (candidate, group) pair.

    Args:
        groups: ``[G, n]`` weight groups (rows), float32/float16/bfloat16/float64, contiguous.
        scales: ``[S, G]`` candidate scales, ``groups``' dtype.
        zero_points: ``[S, G]`` candidate zero points (int8/int16/int32, or FP8 E4M3); ignored
            when ``symmetric``.
        num_bits: integer bits (8 for FP8).
        fp8: FP8 E4M3 instead of integers.
        symmetric: zero points are 0.
        norm: the error exponent (llm-compressor's 2.4).

    Returns:
        ``[S, G]`` errors in ``groups``' dtype.
    """


# Grid steps evaluated per call of the error sweep: the search stops after ``patience`` steps
# without improvement, so a few steps past the stop are computed at most.
STEP_BATCH = 4


def weight_groups(
    w: torch.Tensor,
    strategy: str,
    group_size: int | None,
    block_structure: Sequence[int] | None,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """llm-compressor's flattening of a weight for a strategy (``tensor``, ``channel``, ``group``,
    ``block``): the groups as rows ``[G, n]`` and the qparams' shape."""
    if strategy == "tensor":
        return w.reshape(1, -1), (1,)
    if w.ndim == 0:
        raise ValueError(f"strategy {strategy!r} needs a weight with at least one dimension")
    if strategy == "channel":
        return w.reshape(-1, w.shape[-1]), (*w.shape[:-1], 1)
    if strategy == "group":
        if group_size is None or group_size <= 0:
            raise ValueError(f"strategy 'group' needs a positive group_size; got {group_size}")
        columns = w.shape[-1]
        if columns % group_size:
            raise ValueError(
                f"strategy 'group' needs the last dimension ({columns}) to be a multiple of "
                f"group_size ({group_size}), as llm-compressor does"
            )
        return w.reshape(-1, group_size), (*w.shape[:-1], columns // group_size)
    tiles = blocks(w, block_structure)
    rows, cols = tiles.shape[0], tiles.shape[2]
    return tiles.transpose(1, 2).reshape(rows * cols, -1), (rows, cols)


def blocks(w: torch.Tensor, block_structure: Sequence[int] | None) -> torch.Tensor:
    """``[rows, height, cols, width]`` view of ``w`` zero-padded to whole blocks (llm-compressor's
    padding)."""
    if block_structure is None or len(block_structure) != 2 or min(block_structure) <= 0:
        raise ValueError(
            f"strategy 'block' needs block_structure [rows, cols]; got {block_structure}"
        )
    if w.ndim != 2:
        raise ValueError(f"strategy 'block' needs a 2-d weight; got shape {tuple(w.shape)}")
    height, width = (int(v) for v in block_structure)
    pad_rows, pad_cols = -w.shape[0] % height, -w.shape[1] % width
    if pad_rows or pad_cols:
        w = torch.nn.functional.pad(w, (0, pad_cols, 0, pad_rows))
    return w.reshape(w.shape[0] // height, height, w.shape[1] // width, width)


def mse_search(
    groups: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    quant: tuple[int, bool, bool],
    grid: float,
    maxshrink: float,
    patience: int,
    norm: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """llm-compressor's grid search with its early stop; errors from ``tritonobs::weight_mse_sweep``.

    Args:
        groups: ``[G, n]`` contiguous weight groups.
        lo: ``[G]`` group minima.
        hi: ``[G]`` group maxima.
        quant: ``(num_bits, fp8, symmetric)``.
        grid: shrink resolution; candidates ``p = 1 - i / grid``, ``i < int(maxshrink * grid)``.
        maxshrink: largest shrink.
        patience: steps without any group improving before the search stops.
        norm: error exponent.

    Returns:
        ``(best_lo, best_hi)`` per group: the first candidate range of smallest error.
    """
    best_error = torch.full_like(lo, torch.finfo(lo.dtype).max)
    best_lo, best_hi = lo.clone(), hi.clone()
    total = int(maxshrink * grid)
    stale = 0
    for first in range(0, total, STEP_BATCH):
        shrinks = [1 - i / grid for i in range(first, min(total, first + STEP_BATCH))]
        candidates = [(lo * p, hi * p) for p in shrinks]
        qparams = [qparams_from_range(c_lo, c_hi, *quant) for c_lo, c_hi in candidates]
        scales = torch.stack([scale for scale, _ in qparams])
        zero_points = torch.stack([zp for _, zp in qparams])
        errors = weight_mse_sweep(groups, scales, zero_points, *quant, norm)
        for error, (c_lo, c_hi) in zip(errors, candidates, strict=True):
            improved = error < best_error
            if improved.any():
                best_error[improved] = error[improved]
                best_lo[improved] = c_lo[improved]
                best_hi[improved] = c_hi[improved]
                stale = 0
            else:
                stale += 1
                if stale >= patience:
                    return best_lo, best_hi
    return best_lo, best_hi
