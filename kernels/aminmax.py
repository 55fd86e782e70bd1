"""Running min/max (or moving average) of the finite values of a strided tensor: one fused launch.

``_aminmax_kernel`` serves both ``tritonobs::aminmax`` (per tensor: one "channel" of stride 0) and
``tritonobs::aminmax_per_channel``. The input is read in place through its strides as a
``[rows, C, K]`` view: ``C`` is the channel axis, ``K`` the reduced axis of smallest stride and the
rows up to three more reduced axes (:func:`reduced_axes` merges what it can first; the order of the
reduced axes does not matter to a min/max). Values are converted to float32 right after the load.

Per channel ``c``, over the finite values ``v`` of ``x[..., c, ...]`` (NaN and +-inf are skipped and
counted in ``nonfinite``)::

    batch_min = min v,  batch_max = max v                       (+inf, -inf when there is none)
    new_min   = min(running_min, batch_min)                     averaging_constant is None
    new_min   = batch_min if running is (+inf, -inf)            averaging_constant = a
                else running_min + a * (batch_min - running_min)   (fp32, each op rounded, no FMA)
    new_min   = running_min where batch_min > batch_max         (no finite value: unchanged)

and likewise for the max. Each program reduces a range of ``BLOCK_R x BLOCK_C x BLOCK_K`` tiles of
one channel block in two passes. A block's tiles are numbered full tiles first, then the edge tiles
(the ragged end of the rows, the ragged row block; every tile of a ragged channel block), so that a
range is some full tiles followed by some edge tiles. Pass 1 takes the full tiles: a loop with no
branch and no mask, which Triton software-pipelines (``cp.async`` into shared memory, ``NUM_STAGES
- 1`` tiles ahead), ``min`` dropping NaN and ``max`` keeping it, so that a NaN or an infinity shows
in the accumulators. Pass 2 takes the edge tiles, masked, skipping and counting non-finite values,
and after a non-finite value in pass 1 the range's full tiles again, masked. With several programs
per channel block each one writes its partial min/max and draws a ticket (acq_rel atomic); the one
that draws the last ticket reduces the partials and writes the new running values: the whole update
is one launch, with no host synchronisation.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import (
    COPIES,
    SPEC_SMS,
    LaunchConfig,
    cdiv,
    device_guard,
    next_power_of_2,
    options,
    sm_count,
    workspace,
)

# Elements per tile (4096: 8 KiB of bf16, 16 values per thread at 8 warps; 8192 takes the
# pipelined loop past 128 registers).
TILE = 4096
NUM_WARPS = 8
# Pipeline stages of the full-tile loop: NUM_STAGES - 1 tiles in flight per program (cp.async into
# shared memory, 48 KiB of fp32 tiles).
NUM_STAGES = 4
# A tile keeps at least this many elements contiguous when it narrows its innermost axis.
MIN_CONTIGUOUS = 256
# Channel blocks narrow until the splits per block (each writes a partial row of C values) stay
# under this many, so that partials cost a few percent of the input at most.
MAX_SPLITS = 32
# Programs per SM on a GPU: the blocks of 8 warps that fit on an sm_90 SM at once, the fewest over
# the COMPILE_SPECS variants (tests/compile_sm90.py): 2 for per tensor fp32 (98 registers) and per
# channel bf16 with several programs per channel block (94, 99); bf16/fp16 per tensor fit 3, fp64
# and one program per channel block 4. The interpreter runs programs one after another, so few.
PROGRAMS_PER_SM = 2
INTERPRETER_PROGRAMS = 16
MAX_ROW_AXES = 3

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _offsets(
    rb,
    kb,
    cb,
    R1,
    R2,
    R,
    C,
    K,
    stride_x0,
    stride_x1,
    stride_x2,
    stride_xc,
    stride_xk,
    ROW_AXES: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """int64 offsets of the tile (row block ``rb``, channel block ``cb``, k block ``kb``), its mask."""
    r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    if ROW_AXES == 1:
        row = r * stride_x0
    else:
        # Several row axes only below 2**31 rows (the launcher sees to it): int32 divisions.
        ri = r.to(tl.int32)
        if ROW_AXES == 2:
            row = (ri // R1).to(tl.int64) * stride_x0 + (ri % R1).to(tl.int64) * stride_x1
        else:
            row = (ri // (R1 * R2)).to(tl.int64) * stride_x0
            row += ((ri // R2) % R1).to(tl.int64) * stride_x1 + (ri % R2).to(tl.int64) * stride_x2
    offs = row[:, None, None] + (c * stride_xc)[None, :, None] + (k * stride_xk)[None, None, :]
    mask = (r < R)[:, None, None] & (c < C)[None, :, None] & (k < K)[None, None, :]
    return offs, mask


@triton.jit
def _masked_minmax(x_ptr, offs, mask):
    """Per channel, the min and max of a tile's finite values (+inf, -inf when there is none), and
    how many of its values are not finite."""
    v = tl.load(x_ptr + offs, mask=mask, other=float("nan")).to(tl.float32)
    finite = (v - v) == 0.0  # false for NaN, +-inf and masked-out lanes
    count = tl.sum((mask & ~finite).to(tl.int32))
    v_min = tl.min(tl.min(tl.where(finite, v, float("inf")), axis=2), axis=0)
    v_max = tl.max(tl.max(tl.where(finite, v, float("-inf")), axis=2), axis=0)
    return v_min, v_max, count


@triton.jit
def _aminmax_kernel(
    x_ptr,
    running_min_ptr,
    running_max_ptr,
    nonfinite_ptr,
    partial_ptr,
    ticket_ptr,
    R1,
    R2,
    R,
    C,
    K,
    stride_x0,
    stride_x1,
    stride_x2,
    stride_xc,
    stride_xk,
    n_kblocks,
    n_tiles,
    n_splits,
    averaging_constant,
    ROW_AXES: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    MULTI_SPLIT: tl.constexpr,
    EMA: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """Program ``pid`` = (channel block ``pid // n_splits``, split ``pid % n_splits``).

    Updates ``running_min``/``running_max`` (float32 ``[C]``, or one value) in place and adds the
    skipped values to ``nonfinite`` (int64, one value). ``ticket_ptr``: int64 ``[blocks]`` of zeros,
    one ticket per channel block, put back to zero by the block's last program (so the workspace
    needs no zero-fill between launches). ``partial_ptr``: float32 ``[2, n_splits, C]`` (min, max)
    when ``MULTI_SPLIT``.
    """
    pid = tl.program_id(0)
    # Scalars in int64: no int32 overflow at any size (and no overflow checks in the interpreter).
    cb = pid.to(tl.int64) // n_splits
    split = pid - cb * n_splits
    tile_lo = split * n_tiles // n_splits
    tile_hi = (split + 1) * n_tiles // n_splits
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    # The block's tiles are numbered full tiles first (fr x fk of them, row-major), then the edge
    # tiles: the ragged k column of the full row blocks, then the ragged row block(s). A ragged
    # channel block has no full tile (fr = fk = 0: every tile is an edge tile, row-major).
    c_full = (cb + 1) * BLOCK_C <= C
    fr = tl.where(c_full, R // BLOCK_R, 0).to(tl.int64)
    fk = tl.where(c_full, K // BLOCK_K, 0).to(tl.int64)
    n_full = fr * fk
    n_column = fr * (n_kblocks - fk)

    # Pass 1, the full tiles of the range: unmasked loads with no branch, pipelined; min dropping
    # NaN and max keeping it, so that a NaN or an infinity shows in (mn, mx).
    mn = tl.full([BLOCK_R, BLOCK_C, BLOCK_K], float("inf"), tl.float32)
    mx = tl.full([BLOCK_R, BLOCK_C, BLOCK_K], float("-inf"), tl.float32)
    full_hi = tl.minimum(tile_hi, n_full)
    # (row block, k block) of the next full tile, stepped without a division per tile.
    rb = tile_lo // tl.maximum(fk, 1)
    kb = tile_lo - rb * fk
    for _ in tl.range(tile_lo, full_hi, num_stages=NUM_STAGES):
        offs = _offsets(
            rb,
            kb,
            cb,
            R1,
            R2,
            R,
            C,
            K,
            stride_x0,
            stride_x1,
            stride_x2,
            stride_xc,
            stride_xk,
            ROW_AXES,
            BLOCK_R,
            BLOCK_C,
            BLOCK_K,
        )[0]
        v = tl.load(x_ptr + offs).to(tl.float32)
        mn = tl.minimum(mn, v)
        mx = tl.maximum(mx, v, propagate_nan=tl.PropagateNan.ALL)
        kb += 1
        rb += kb == fk
        kb = tl.where(kb == fk, 0, kb)
    careful = tl.max(((mx != mx) | (mn == float("-inf")) | (mx == float("inf"))).to(tl.int32)) > 0
    # Channels first, then one reduction over the rest (each reduction is a call, which costs in
    # the interpreter).
    batch_min = tl.min(tl.reshape(tl.permute(mn, (1, 0, 2)), [BLOCK_C, BLOCK_R * BLOCK_K]), axis=1)
    batch_max = tl.max(tl.reshape(tl.permute(mx, (1, 0, 2)), [BLOCK_C, BLOCK_R * BLOCK_K]), axis=1)
    batch_min = tl.where(careful, float("inf"), batch_min)
    batch_max = tl.where(careful, float("-inf"), batch_max)

    # Pass 2, masked loads that skip and count non-finite values, reduced tile by tile (few tiles;
    # 3D accumulators here would double the registers of the whole kernel): the range's full tiles
    # again after a non-finite value, then its edge tiles. Each loop starts from a bound that does
    # not depend on `careful` (a reduction): Triton's axis analysis would lose the contiguity of
    # the loads (scalar loads) with it.
    count = tl.full((), 0, tl.int64)
    for tile in range(tile_lo, tl.where(careful, full_hi, tile_lo)):
        rb = tile // fk
        offs, mask = _offsets(
            rb,
            tile - rb * fk,
            cb,
            R1,
            R2,
            R,
            C,
            K,
            stride_x0,
            stride_x1,
            stride_x2,
            stride_xc,
            stride_xk,
            ROW_AXES,
            BLOCK_R,
            BLOCK_C,
            BLOCK_K,
        )
        v_min, v_max, n = _masked_minmax(x_ptr, offs, mask)
        batch_min = tl.minimum(batch_min, v_min)
        batch_max = tl.maximum(batch_max, v_max)
        count += n
    for tile in range(tl.maximum(tile_lo, n_full), tile_hi):
        # Edge tile `edge`: first the ragged k column of the full row blocks, then row-major.
        edge = tile - n_full
        row = edge - n_column
        offs, mask = _offsets(
            tl.where(row < 0, edge, fr + row // n_kblocks),
            tl.where(row < 0, fk, row % n_kblocks),
            cb,
            R1,
            R2,
            R,
            C,
            K,
            stride_x0,
            stride_x1,
            stride_x2,
            stride_xc,
            stride_xk,
            ROW_AXES,
            BLOCK_R,
            BLOCK_C,
            BLOCK_K,
        )
        v_min, v_max, n = _masked_minmax(x_ptr, offs, mask)
        batch_min = tl.minimum(batch_min, v_min)
        batch_max = tl.maximum(batch_max, v_max)
        count += n
    if count > 0:
        tl.atomic_add(nonfinite_ptr, count)

    last = pid >= 0  # with one split per block, every program is the last of its block
    if MULTI_SPLIT:
        tl.store(partial_ptr + split * C + c, batch_min, mask=c_mask)
        tl.store(partial_ptr + (n_splits + split) * C + c, batch_max, mask=c_mask)
        # Every thread's partial stores before the release; the last ticket acquires them all.
        tl.debug_barrier()
        ticket = tl.atomic_add(ticket_ptr + cb, 1, sem="acq_rel")
        last = ticket == n_splits - 1
        if last:
            # Every other program of the block has drawn: the ticket is free to reset.
            tl.store(ticket_ptr + cb, 0)
            batch_min = tl.full([BLOCK_C], float("inf"), tl.float32)
            batch_max = tl.full([BLOCK_C], float("-inf"), tl.float32)
            for s0 in range(0, n_splits, SPLIT_BLOCK):
                s = s0 + tl.arange(0, SPLIT_BLOCK)
                m = (s < n_splits)[:, None] & c_mask[None, :]
                p = partial_ptr + s[:, None] * C + c[None, :]
                p_min = tl.load(p, mask=m, other=float("inf"), cache_modifier=".cg")
                p_max = tl.load(p + n_splits * C, mask=m, other=float("-inf"), cache_modifier=".cg")
                batch_min = tl.minimum(batch_min, tl.min(p_min, axis=0))
                batch_max = tl.maximum(batch_max, tl.max(p_max, axis=0))
    if last:
        running_min = tl.load(running_min_ptr + c, mask=c_mask)
        running_max = tl.load(running_max_ptr + c, mask=c_mask)
        if EMA:
            # fp32 on the GPU already; the interpreter passes Python floats as float64.
            a = tl.cast(averaging_constant, tl.float32)
            fresh = (running_min == float("inf")) & (running_max == float("-inf"))
            new_min = tl.where(fresh, batch_min, running_min + a * (batch_min - running_min))
            new_max = tl.where(fresh, batch_max, running_max + a * (batch_max - running_max))
        else:
            # torch.minimum/maximum, NaN in the running value included (batch values never are).
            new_min = tl.where(batch_min < running_min, batch_min, running_min)
            new_max = tl.where(batch_max > running_max, batch_max, running_max)
        seen = batch_min <= batch_max
        tl.store(running_min_ptr + c, tl.where(seen, new_min, running_min), mask=c_mask)
        tl.store(running_max_ptr + c, tl.where(seen, new_max, running_max), mask=c_mask)


def reduced_axes(
    shape: tuple[int, ...], strides: tuple[int, ...], skip: int | None
) -> list[tuple[int, int]]:
    """``(size, stride)`` of the axes to reduce, largest stride first, merged where possible.

    Axes of size 1 are dropped, the others sorted by stride (a min/max does not care about order)
    and neighbours merged when the outer stride is the inner one times its size. ``skip`` is the
    channel axis, kept out. At least one axis comes back (``(1, 1)`` for nothing to reduce).
    """
    axes = sorted(
        (
            (n, s)
            for d, (n, s) in enumerate(zip(shape, strides, strict=True))
            if d != skip and n != 1
        ),
        key=lambda axis: axis[1],
        reverse=True,
    )
    merged: list[tuple[int, int]] = []
    for size, stride in axes:
        if merged and merged[-1][1] == stride * size:
            merged[-1] = (merged[-1][0] * size, stride)
        else:
            merged.append((size, stride))
    return merged or [(1, 1)]


def _tile_shape(
    rows: int, channels: int, k: int, channel_inner: bool, programs: int, tile: int
) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_C, BLOCK_K)``: the contiguous axis first, up to ``tile`` elements."""
    if channel_inner:
        block_c = min(next_power_of_2(channels), tile)
        while block_c > MIN_CONTIGUOUS and cdiv(channels, block_c) * MAX_SPLITS < programs:
            block_c //= 2
        block_k = min(next_power_of_2(k), tile // block_c)
    else:
        block_k = min(next_power_of_2(k), tile)
        block_c = min(next_power_of_2(channels), tile // block_k)
        # Many short channels: wider channel blocks, so that each program has several tiles.
        while (
            block_k > MIN_CONTIGUOUS and block_c < channels and cdiv(channels, block_c) > programs
        ):
            block_k //= 2
            block_c *= 2
    block_r = min(next_power_of_2(rows), tile // (block_c * block_k))
    return block_r, block_c, block_k


def _programs(device: torch.device, numel: int) -> int:
    """How many programs to aim for: a few per SM, or in the interpreter one per 4 tiles, <= 16."""
    if device.type == "cuda":
        return PROGRAMS_PER_SM * sm_count(device)
    return max(1, min(INTERPRETER_PROGRAMS, numel // (4 * TILE)))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The launch of ``_aminmax_kernel`` over a tensor of one shape and strides.

    Attributes:
        grid: programs (channel blocks x splits).
        args: the integer arguments by name, in the kernel's order.
        constexprs: ``ROW_AXES``, ``BLOCK_*``, ``SPLIT_BLOCK``, ``MULTI_SPLIT``.
        tickets: int64 tickets the launch needs (one per channel block).
        partials: float32 partial min/max values the launch needs.
        contiguous: the input must be copied first (more reduced axes than the kernel walks).
    """

    grid: tuple[int]
    args: dict[str, int]
    constexprs: dict[str, int | bool]
    tickets: int
    partials: int
    contiguous: bool = False


def _plan(
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    ch_axis: int | None,
    programs: int,
    itemsize: int = 4,
) -> Plan:
    """The :class:`Plan` for a tensor of this shape and strides, ``programs`` programs aimed at.

    Tiles hold ``TILE`` elements, half as many for 8-byte elements and a quarter for several row
    axes (per-element 64-bit offsets). The grid fills whole waves of ``programs`` (the blocks that
    fit on the GPU at once) up to fewer than one slot per channel block.
    """
    axes = reduced_axes(shape, strides, ch_axis)
    (k, stride_k), rows = axes[-1], axes[:-1]
    row_sizes = [n for n, _ in rows] + [1] * (MAX_ROW_AXES - len(rows))
    row_strides = [s for _, s in rows] + [0] * (MAX_ROW_AXES - len(rows))
    if ch_axis is None:
        channels, stride_c = 1, 0
    else:
        channels, stride_c = shape[ch_axis], strides[ch_axis]
    row_count = math.prod(row_sizes)
    channel_inner = channels > 1 and stride_c < stride_k
    tile = TILE // 4 if len(rows) > 1 else TILE // 2 if itemsize > 4 else TILE
    block_r, block_c, block_k = _tile_shape(row_count, channels, k, channel_inner, programs, tile)
    n_cblocks = cdiv(channels, block_c)
    n_kblocks = cdiv(k, block_k)
    n_tiles = cdiv(row_count, block_r) * n_kblocks
    # Whole waves of `programs`: as many splits as fill the waves that one split per channel block
    # and program would span (fewer than n_cblocks slots of the last wave stay idle).
    waves = cdiv(n_cblocks * cdiv(programs, n_cblocks), programs)
    n_splits = min(n_tiles, waves * programs // n_cblocks)
    args = {
        "R1": row_sizes[1],
        "R2": row_sizes[2],
        "R": row_count,
        "C": channels,
        "K": k,
        "stride_x0": row_strides[0],
        "stride_x1": row_strides[1],
        "stride_x2": row_strides[2],
        "stride_xc": stride_c,
        "stride_xk": stride_k,
        "n_kblocks": n_kblocks,
        "n_tiles": n_tiles,
        "n_splits": n_splits,
    }
    multi = n_splits > 1
    constexprs = {
        "ROW_AXES": max(1, len(rows)),
        "BLOCK_R": block_r,
        "BLOCK_C": block_c,
        "BLOCK_K": block_k,
        "SPLIT_BLOCK": max(1, min(next_power_of_2(n_splits), tile // block_c)),
        "MULTI_SPLIT": multi,
    }
    return Plan(
        grid=(n_cblocks * n_splits,),
        args=args,
        constexprs=constexprs,
        # Single-split launches never touch these; one element keeps the pointers valid.
        tickets=n_cblocks if multi else 1,
        partials=2 * n_splits * channels if multi else 1,
    )


def launch_config(plan: Plan, ema: bool) -> LaunchConfig:
    """The kernel, constexprs and options of the launch of ``plan`` (and of its COMPILE_SPECS).

    No FMA contraction: the EMA rounds after each operation, as torch does.
    """
    return LaunchConfig(
        _aminmax_kernel,
        {**plan.constexprs, "EMA": ema, "NUM_STAGES": NUM_STAGES},
        options(NUM_WARPS),
    )


def _needs_copy(shape: tuple[int, ...], strides: tuple[int, ...], ch_axis: int | None) -> bool:
    """More than four reduced axes that no stride order merges, or over 2**31 rows on several
    axes: never seen from a real model; one contiguous copy brings it back to two axes."""
    axes = reduced_axes(shape, strides, ch_axis)
    return len(axes) > MAX_ROW_AXES + 1 or (
        len(axes) > 2 and math.prod(n for n, _ in axes[:-1]) >= 2**31
    )


@dataclasses.dataclass(frozen=True)
class Launch:
    """Everything a launch over one input layout needs, made once and cached (see :func:`launch_for`).

    Attributes:
        plan: the grid and kernel arguments.
        out_shape: the running state's shape (``()`` or ``(C,)``).
        kwargs: the keyword arguments of the launch but ``averaging_constant`` (integers, then
            :func:`launch_config`'s constexprs and options).
        by_constant: :attr:`kwargs` with each ``averaging_constant`` seen so far (see
            :meth:`kwargs_with`).
        tickets: the per-device ticket workspace (left at zero by every launch).
        partials: the per-device partial min/max workspace (written before it is read).
        device: the input's device (part of the cache key; read here, not from the tensor again).
    """

    plan: Plan
    out_shape: tuple[int, ...]
    kwargs: dict[str, object]
    tickets: torch.Tensor
    partials: torch.Tensor
    device: torch.device
    by_constant: dict[float, dict[str, object]] = dataclasses.field(default_factory=dict)

    def kwargs_with(self, averaging_constant: float) -> dict[str, object]:
        """All the launch's keyword arguments, made once per constant: merging one keyword into
        two dozen at the call costs a microsecond more than passing a ready dict."""
        kwargs = self.by_constant.get(averaging_constant)
        if kwargs is None:
            kwargs = self.by_constant[averaging_constant] = {
                **self.kwargs,
                "averaging_constant": averaging_constant,
            }
        return kwargs


_LAUNCHES: dict[tuple, Launch] = {}


def plan_for(x: torch.Tensor, ch_axis: int | None) -> Plan:
    """The :class:`Plan` over ``x`` (a contiguous copy's when ``x`` has too many axes)."""
    shape, strides = tuple(x.shape), tuple(x.stride())
    programs = _programs(x.device, x.numel())
    if _needs_copy(shape, strides, ch_axis):
        dense = torch.empty(shape, device="meta").stride()
        plan = _plan(shape, dense, ch_axis, programs, x.element_size())
        return dataclasses.replace(plan, contiguous=True)
    return _plan(shape, strides, ch_axis, programs, x.element_size())


def launch_for(x: torch.Tensor, ch_axis: int | None, ema: bool) -> Launch:
    """The cached :class:`Launch` over ``x``, by shape, strides, dtype, channel axis, device, EMA.

    Raises:
        TypeError: ``x`` is not float32, float16, bfloat16 or float64.
        ValueError: ``x`` has no elements.
    """
    key = (x.shape, x.stride(), x.dtype, ch_axis, x.device, ema)
    launch = _LAUNCHES.get(key)
    if launch is None:
        if x.dtype not in _INPUT_DTYPES:
            raise TypeError(
                f"aminmax: x must be float32, float16, bfloat16 or float64; got {x.dtype}"
            )
        if x.numel() == 0:
            raise ValueError("aminmax: x has no elements")
        plan = plan_for(x, ch_axis)
        kwargs = {**plan.args, **launch_config(plan, ema).kwargs}
        launch = Launch(
            plan=plan,
            out_shape=() if ch_axis is None else (x.shape[ch_axis],),
            kwargs=kwargs,
            tickets=workspace(x.device, "aminmax_tickets", plan.tickets, torch.int64),
            partials=workspace(x.device, "aminmax_partials", plan.partials, torch.float32),
            device=x.device,
        )
        _LAUNCHES[key] = launch
    return launch


def aminmax_update(
    x: torch.Tensor,
    ch_axis: int | None,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Launch ``_aminmax_kernel`` over ``x``: updates the running state in place, one launch.

    Args:
        x: float32/float16/bfloat16/float64, any shape and strides, at least one element.
        ch_axis: the channel axis in ``[0, x.dim())``, or ``None`` for one per-tensor value.
        running_min, running_max: float32, 0-d (per tensor) or ``[C]``, updated in place. Other
            float dtypes round-trip through float32 copies (extra torch kernels).
        nonfinite_count: 0-d int64, incremented by the number of skipped NaN/inf values.
        averaging_constant: ``None`` for min/max, the moving-average constant otherwise.
    """
    ema = averaging_constant is not None
    launch = launch_for(x, ch_axis, ema)
    if running_min.shape != launch.out_shape or running_max.shape != launch.out_shape:
        raise ValueError(
            f"aminmax: running_min/running_max of shapes {tuple(running_min.shape)}/"
            f"{tuple(running_max.shape)}, expected {launch.out_shape}"
        )
    if running_min.dtype != torch.float32 or running_max.dtype != torch.float32:
        # The kernel keeps float32 statistics; other buffer dtypes round-trip through float32.
        state = (running_min.float(), running_max.float())
        aminmax_update(x, ch_axis, *state, nonfinite_count, averaging_constant)
        running_min.copy_(state[0])
        running_max.copy_(state[1])
        return
    if launch.plan.contiguous:
        COPIES["aminmax"] += 1
        x = x.contiguous()
    with device_guard(launch.device):
        _aminmax_kernel[launch.plan.grid](
            x,
            running_min,
            running_max,
            nonfinite_count,
            launch.partials,
            launch.tickets,
            **launch.kwargs_with(averaging_constant if ema else 0.0),
        )


def aminmax_triton(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    nonfinite_count: torch.Tensor,
    averaging_constant: float | None,
) -> None:
    """Triton launcher of ``tritonobs::aminmax`` (same arguments; updates the state in place)."""
    aminmax_update(x, None, running_min, running_max, nonfinite_count, averaging_constant)


def _spec(
    dtype: str,
    shape: tuple[int, ...],
    ch_axis: int | None,
    strides: tuple[int, ...] | None = None,
    ema: bool = False,
):
    """A COMPILE_SPECS entry: the launch on an H200 (132 SMs) for a tensor of this shape/strides.

    Integer arguments are typed as the runtime specialises them: 1 is a constant, multiples of 16
    are marked as such (that is what lets the loads vectorise).
    """
    if strides is None:
        strides = torch.empty(shape, device="meta").stride()
    itemsize = 8 if dtype == "fp64" else 4
    plan = _plan(shape, strides, ch_axis, PROGRAMS_PER_SM * SPEC_SMS, itemsize)
    signature = {
        "x_ptr": f"*{dtype}",
        "running_min_ptr": "*fp32",
        "running_max_ptr": "*fp32",
        "nonfinite_ptr": "*i64",
        "partial_ptr": "*fp32",
        "ticket_ptr": "*i64",
        "averaging_constant": "fp32",
    }
    ones = {name: 1 for name, value in plan.args.items() if value == 1}
    for name, value in plan.args.items():
        if value != 1:
            signature[name] = ("i64" if value >= 2**31 else "i32") + (
                ":16" if value % 16 == 0 else ""
            )
    return launch_config(plan, ema).spec(signature, ones)


COMPILE_SPECS = [
    # per tensor (one row of K after merging); fp16 below, with int64 sizes
    *(_spec(dtype, (8192, 8192), None) for dtype in ("fp32", "bf16", "fp64")),
    # per channel, channel axis outermost (weights, ch_axis=0): one program per channel block, and
    # two per block
    _spec("bf16", (8192, 8192), 0, ema=True),
    _spec("bf16", (4096, 4096), 0, ema=True),
    # per channel, channel axis innermost (activations, ch_axis=-1)
    _spec("bf16", (8192, 8192), 1, ema=True),
    # x[::2, ::2, ::2, ::2, ::2] of a [6, 10, 14, 18, 22] tensor: three row axes
    _spec("fp32", (3, 5, 7, 9, 11), 2, (110880, 11088, 792, 44, 2), ema=True),
    # over 2**31 elements: int64 sizes
    _spec("fp16", (65536, 65536), None),
]
