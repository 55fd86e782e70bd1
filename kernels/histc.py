"""``torch.histc``-exact binning into integer counters: ``tritonobs::histc`` and HistogramObserver's passes.

* :func:`_histogram_stats_kernel`: per-program min/max of the finite values, fused (``COUNT``, the
  observer's pass) with the NaN/inf count and the histogram of the values over the current range:
  in the observer's steady state (the range does not grow) this is the only pass over the input.
* :func:`_histc_kernel`: ``histc``'s histogram over ``[lo, hi]`` (``lo == hi`` becomes the finite
  min/max of ``x``, as ``torch.histc`` does). Its counting loop, :func:`_count_tiles`, is also the
  observer's re-pass over a grown range (``kernels/histogram_update.py``).

A value's bin is ``torch.histc``'s: ``trunc((v - lo) * NBINS / (hi - lo))`` in float32, in that
order, with ``v == hi`` in the last bin, found without a division per value (a reciprocal
multiply and one exact comparison, :func:`_bin`). Full tiles load unmasked (128-bit vectors), in
groups (:func:`group`); only the input's ragged last tile is masked. NaN and inf fail ``|v| < inf`` (libdevice's ``isnan``/``isinf`` do not
run under the interpreter). Counts go to int64 counters (a float32 ``+1`` stops at 2^24): up to
``LOCAL_HIST_MAX_BINS`` bins through a per-program register histogram (``tl.histogram``) flushed
with one atomic per non-empty bin, beyond that with one atomic per value. The range comes from
device tensors (a Python float argument would stay float64 under the interpreter and shift bins).

Host side: grids are plain integers (``tritonobs.kernels._launch``), launches run under the input's
device, and the per-program partials live in a per-device workspace (written before they are read,
so never zeroed).
"""

from __future__ import annotations

import functools

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

# Up to this many bins a program keeps its counts in registers and flushes them once.
LOCAL_HIST_MAX_BINS = 4096
# Up to this many bins a value's bin comes from a reciprocal multiply and one exact comparison
# (``_bin``); above, from a division per value.
RECIPROCAL_MAX_BINS = tl.constexpr(1 << 20)
# Elements per tile (the unit of a streaming launch's grid). Streaming launches use about four
# programs per SM on a GPU and at most 16 under the interpreter, whose programs run one after
# another. A program loads and counts its tiles in groups of up to GROUP_TILES (see ``group``).
BLOCK = 2048
GROUP_TILES = 4
NUM_WARPS = 8
PROGRAMS_PER_SM = 4
INTERPRETER_PROGRAMS = 16


def max_programs(device: torch.device) -> int:
    """Upper bound on the programs of a streaming launch over ``device`` tensors."""
    if device.type == "cuda":
        return PROGRAMS_PER_SM * sm_count(device)
    return INTERPRETER_PROGRAMS


def stream_grid(numel: int, device: torch.device) -> tuple[int, int]:
    """``(programs, tiles_per_program)`` covering ``numel`` elements in tiles of ``BLOCK``."""
    tiles = cdiv(numel, BLOCK)
    programs = max(1, min(tiles, max_programs(device)))
    return programs, cdiv(tiles, programs)


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """A tensor whose memory holds ``x``'s elements contiguously (order does not matter here).

    ``x`` itself when contiguous (a launch reads only its data pointer); a transposed (dense,
    permuted) tensor as the permutation that is contiguous, read in place; only tensors with gaps
    (slices, expanded dimensions) are copied, and counted in ``COPIES["flat_view"]``.
    """
    if x.is_contiguous():
        return x
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    if permuted.is_contiguous():
        return permuted
    COPIES["flat_view"] += 1
    return x.contiguous()


@functools.cache
def counting(bins: int) -> dict[str, object]:
    """The counting constexprs for ``bins`` bins: registers up to ``LOCAL_HIST_MAX_BINS``, else atomics.

    Returns:
        ``{"NBINS", "LOCAL", "ACC_BINS"}``: ``ACC_BINS`` register counters (``bins`` rounded up to a
        power of two, at least 32), or 1 (unused) with one atomic per value.
    """
    local = bins <= LOCAL_HIST_MAX_BINS
    # At least one register bin per lane of a warp; the extra bins never receive a value.
    acc_bins = max(next_power_of_2(bins), 32) if local else 1
    return {"NBINS": bins, "LOCAL": local, "ACC_BINS": acc_bins}


@functools.cache
def group(bins: int, itemsize: int) -> int:
    """Tiles per load and ``tl.histogram`` call (``GROUP``) for ``bins`` bins and elements of
    ``itemsize`` bytes: 8192 values (``GROUP_TILES`` tiles) of 4 bytes or less, half as many of
    8 bytes, one tile with an atomic per value (more values per load there would take the kernels
    past 128 registers at 8 warps)."""
    if bins > LOCAL_HIST_MAX_BINS:
        return 1
    return GROUP_TILES // 2 if itemsize > 4 else GROUP_TILES


@triton.jit
def _widen_degenerate(lo, hi):
    """torch.histc's range for a single point: ``[lo - 1, hi + 1]`` when ``lo == hi``.

    Returns:
        ``(lo, hi, width, middle)``: the range, ``hi - lo`` (1 where it is 0), and whether it is 0:
        ``c +- 1`` rounds back to ``c`` for ``|c| >= 2^24``, and torch.histc then puts every value
        in the middle bin ``NBINS // 2``.
    """
    degenerate = lo == hi
    lo = tl.where(degenerate, lo - 1.0, lo)
    hi = tl.where(degenerate, hi + 1.0, hi)
    middle = hi == lo
    return lo, hi, tl.where(middle, 1.0, hi - lo), middle


@triton.jit
def _reduce_partials(part_min_ptr, part_max_ptr, n_parts, PARTS_P2: tl.constexpr):
    """The min/max of per-program partial minima/maxima (``+inf``/``-inf`` when none was finite)."""
    offs = tl.arange(0, PARTS_P2)
    used = offs < n_parts
    lo = tl.min(tl.load(part_min_ptr + offs, mask=used, other=float("inf")), axis=0)
    hi = tl.max(tl.load(part_max_ptr + offs, mask=used, other=float("-inf")), axis=0)
    return lo, hi


@triton.jit
def _reciprocal(width):
    """Per-program scalars of :func:`_bin` for a range of ``width``: ``(scale, ws, inv)``.

    ``ws = width * scale`` with ``scale`` a power of two (1, or 2^100 / 2^-100 for ranges under /
    over 2^-100 / 2^100) that keeps ``ws``, ``1 / ws`` and ``ws * 2^-25`` normal, so that every
    product below is exact; ``inv`` is ``1 / ws`` rounded down by more than its rounding error
    (``inv < 1 / ws``), the only division.
    """
    scale = tl.where(width < 2.0**-100, 2.0**100, tl.where(width > 2.0**100, 2.0**-100, 1.0))
    ws = width * scale
    inv = tl.math.div_rn(tl.full((), 1.0, tl.float32), ws) * (1.0 - 2.0**-22)
    return scale, ws, inv


@triton.jit
def _bin(v, counted, lo, scale, ws, inv, middle, NBINS: tl.constexpr):
    """torch.histc's bin of each ``counted`` value, ``min(trunc((v - lo) * NBINS / width),
    NBINS - 1)`` with the quotient rounded to float32, without a division per value (others get a
    harmless 0; a range that rounds to a point puts every value in the middle bin).

    With ``p = (v - lo) * NBINS`` (float32, as torch.histc rounds it) and ``q = p / width``: the
    candidate ``c = trunc(p * scale * inv)`` is at most ``trunc(RN(q))`` (``inv < 1 / ws``) and
    at least ``trunc(RN(q)) - 1`` (its error is under ``2^-21 q``, below 1 up to 2^20 bins), so the
    bin is ``c + [RN(q) >= k]`` with ``k = c + 1``. ``RN(q) >= k`` exactly when ``q`` lies above
    the rounding midpoint ``k - h`` below ``k`` (``2h`` = the float32 spacing below ``k``), and
    ``q`` is never that midpoint (25 significant bits, which no quotient of two 24-bit floats has):
    the sign of ``fma(-ws, k, ps) + ws * h`` decides it, the fma exact wherever the sum is near 0.
    ``p = inf`` (``(v - lo) * NBINS`` overflows) lands in bin 0 as in torch.histc; ``width = inf``
    makes the sum NaN and every value bin 0, as torch.histc's ``p / inf = 0``. Above 2^20 bins the
    quotient is divided per value.
    """
    p = (tl.where(counted, v, lo) - lo) * NBINS
    p = tl.where(p < float("inf"), p, 0.0)
    if NBINS > RECIPROCAL_MAX_BINS:
        b = tl.math.div_rn(p * scale, ws).to(tl.int32)
    else:
        ps = p * scale
        c = (ps * inv).to(tl.int32)
        k = (c + 1).to(tl.float32)
        below = (k.to(tl.int32, bitcast=True) - 1).to(tl.float32, bitcast=True)
        above = tl.fma(-ws, k, ps) + (ws * 0.5) * (k - below)
        b = c + (above > 0.0).to(tl.int32)
    return tl.where(middle, NBINS // 2, tl.minimum(b, NBINS - 1))


@triton.jit
def _flush(counts_ptr, acc, NBINS: tl.constexpr, ACC_BINS: tl.constexpr):
    """Adds a program's register histogram to the int64 counters (one atomic per non-empty bin)."""
    bins = tl.arange(0, ACC_BINS)
    tl.atomic_add(
        counts_ptr + bins, acc.to(tl.int64), mask=(bins < NBINS) & (acc > 0), sem="relaxed"
    )


@triton.jit
def _load(x_ptr, start, stop, SIZE: tl.constexpr, MASKED: tl.constexpr):
    """The ``SIZE`` values from ``start`` as float32, and which are before ``stop``: all, with a
    plain (vectorised) load, unless ``MASKED``."""
    offs = start + tl.arange(0, SIZE)
    if MASKED:
        in_bounds = offs < stop
        v = tl.load(x_ptr + offs, mask=in_bounds, other=0.0)
    else:
        in_bounds = tl.full((SIZE,), 1, tl.int1)
        v = tl.load(x_ptr + offs)
    return v.to(tl.float32), in_bounds


@triton.jit
def _count(
    v,
    counted,
    acc,
    lo,
    scale,
    ws,
    inv,
    middle,
    counts_ptr,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
):
    """Counts the ``counted`` values in the register histogram ``acc`` (returned), or with one
    atomic each in ``counts`` beyond ``LOCAL_HIST_MAX_BINS`` bins."""
    b = _bin(v, counted, lo, scale, ws, inv, middle, NBINS)
    if LOCAL:
        acc += tl.histogram(b, ACC_BINS, mask=counted)
    else:
        tl.atomic_add(counts_ptr + b, counted.to(tl.int64), mask=counted, sem="relaxed")
    return acc


@triton.jit
def _tiles_of(n, pid, tiles, GROUP: tl.constexpr, BLOCK: tl.constexpr):
    """Program ``pid``'s share of a launch of ``tiles`` tiles of ``BLOCK`` elements each:
    ``(first, grouped, stop, full, ragged)``.

    Its full tiles are ``[first, stop)``: groups of ``GROUP`` tiles up to ``grouped`` (loaded
    unmasked), then fewer than ``GROUP`` (one load masked at a tile boundary, still vectorised).
    ``ragged``: it owns the last tile, tile ``full``, of ``n % BLOCK`` elements (a masked load).
    """
    full = n // BLOCK
    first = pid.to(tl.int64) * tiles
    stop = tl.minimum(first + tiles, full)
    grouped = first + tl.maximum(stop - first, 0) // GROUP * GROUP
    ragged = (full * BLOCK < n) & (full // tiles == pid)
    return first, grouped, stop, full, ragged


@triton.jit
def _count_tiles(
    x_ptr,
    n,
    lo,
    hi,
    counts_ptr,
    pid,
    tiles,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    BLOCK: tl.constexpr,
    GROUP: tl.constexpr,
):
    """``counts[trunc((v - lo) * NBINS / (hi - lo))] += 1`` for the finite ``v`` in ``[lo, hi]`` of
    program ``pid``'s ``tiles`` tiles; a single point ``c`` counts over ``[c - 1, c + 1]``.

    The full tiles load unmasked; the ragged last tile, if any, is its owner's last."""
    lo, hi, width, middle = _widen_degenerate(lo, hi)
    scale, ws, inv = _reciprocal(width)
    acc = tl.zeros((ACC_BINS,), tl.int32)
    first, grouped, stop, full, ragged = _tiles_of(n, pid, tiles, GROUP, BLOCK)
    for t in range(first, grouped, GROUP):
        v, _ = _load(x_ptr, t * BLOCK, n, GROUP * BLOCK, False)
        counted = (v >= lo) & (v <= hi)
        acc = _count(
            v, counted, acc, lo, scale, ws, inv, middle, counts_ptr, NBINS, ACC_BINS, LOCAL
        )
    if grouped < stop:
        v, in_bounds = _load(x_ptr, grouped * BLOCK, stop * BLOCK, GROUP * BLOCK, True)
        counted = in_bounds & (v >= lo) & (v <= hi)
        acc = _count(
            v, counted, acc, lo, scale, ws, inv, middle, counts_ptr, NBINS, ACC_BINS, LOCAL
        )
    if ragged:
        v, in_bounds = _load(x_ptr, full * BLOCK, n, BLOCK, True)
        counted = in_bounds & (v >= lo) & (v <= hi)
        acc = _count(
            v, counted, acc, lo, scale, ws, inv, middle, counts_ptr, NBINS, ACC_BINS, LOCAL
        )
    if LOCAL:
        _flush(counts_ptr, acc, NBINS, ACC_BINS)


@triton.jit
def _stats_tile(
    v,
    in_bounds,
    vmin,
    vmax,
    nonfinite,
    acc,
    lo,
    hi,
    scale,
    ws,
    inv,
    middle,
    counts_ptr,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    COUNT: tl.constexpr,
):
    """One tile of :func:`_histogram_stats_kernel`: the running finite min/max, and with ``COUNT``
    the NaN/inf count and the histogram over ``[lo, hi]``."""
    finite = in_bounds & (tl.abs(v) < float("inf"))
    vmin = tl.minimum(vmin, tl.min(tl.where(finite, v, float("inf")), axis=0))
    vmax = tl.maximum(vmax, tl.max(tl.where(finite, v, float("-inf")), axis=0))
    if COUNT:
        nonfinite += tl.sum((in_bounds & ~finite).to(tl.int32), axis=0)
        counted = finite & (v >= lo) & (v <= hi)
        acc = _count(
            v, counted, acc, lo, scale, ws, inv, middle, counts_ptr, NBINS, ACC_BINS, LOCAL
        )
    return vmin, vmax, nonfinite, acc


@triton.jit
def _histogram_stats_kernel(
    x_ptr,
    n,
    lo_ptr,
    hi_ptr,
    part_min_ptr,
    part_max_ptr,
    part_nonfinite_ptr,
    counts_ptr,
    tiles,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    COUNT: tl.constexpr,
    BLOCK: tl.constexpr,
    GROUP: tl.constexpr = 1,
):
    """Per program: ``part_min[pid] = min v``, ``part_max[pid] = max v`` over its finite values
    (``+inf``/``-inf`` when none), and with ``COUNT``: ``part_nonfinite[pid] = sum(!finite)`` and
    ``counts[trunc((v - lo) * NBINS / (hi - lo))] += 1`` for finite ``v`` in the current range.

    ``COUNT`` (the observer's fused pass): ``[lo, hi]`` is the running range (nothing is counted
    while it is uninitialised; a single point ``c`` counts over ``[c - 1, c + 1]``). Without
    ``COUNT`` (``histc``'s pre-pass; ``part_nonfinite_ptr`` unused) the program exits at once
    unless ``lo == hi``. The full tiles load unmasked; the ragged last tile is its owner's last.
    """
    pid = tl.program_id(0)
    lo = tl.load(lo_ptr)
    hi = tl.load(hi_ptr)
    if (lo == hi) | COUNT:
        initialised = (lo != float("inf")) & (hi != float("-inf"))
        lo, hi, width, middle = _widen_degenerate(lo, hi)
        # Uninitialised: an empty range [1, 0], which counts nothing and converts no NaN to int.
        lo = tl.where(initialised, lo, 1.0)
        hi = tl.where(initialised, hi, 0.0)
        scale, ws, inv = _reciprocal(width)
        vmin = tl.full((), float("inf"), tl.float32)
        vmax = tl.full((), float("-inf"), tl.float32)
        nonfinite = tl.zeros((), tl.int32)
        acc = tl.zeros((ACC_BINS,), tl.int32)
        first, grouped, stop, full, ragged = _tiles_of(n, pid, tiles, GROUP, BLOCK)
        for t in range(first, grouped, GROUP):
            v, in_bounds = _load(x_ptr, t * BLOCK, n, GROUP * BLOCK, False)
            vmin, vmax, nonfinite, acc = _stats_tile(
                v, in_bounds, vmin, vmax, nonfinite, acc, lo, hi, scale, ws, inv, middle,
                counts_ptr, NBINS, ACC_BINS, LOCAL, COUNT,
            )  # fmt: skip
        if grouped < stop:
            v, in_bounds = _load(x_ptr, grouped * BLOCK, stop * BLOCK, GROUP * BLOCK, True)
            vmin, vmax, nonfinite, acc = _stats_tile(
                v, in_bounds, vmin, vmax, nonfinite, acc, lo, hi, scale, ws, inv, middle,
                counts_ptr, NBINS, ACC_BINS, LOCAL, COUNT,
            )  # fmt: skip
        if ragged:
            v, in_bounds = _load(x_ptr, full * BLOCK, n, BLOCK, True)
            vmin, vmax, nonfinite, acc = _stats_tile(
                v, in_bounds, vmin, vmax, nonfinite, acc, lo, hi, scale, ws, inv, middle,
                counts_ptr, NBINS, ACC_BINS, LOCAL, COUNT,
            )  # fmt: skip
        tl.store(part_min_ptr + pid, vmin)
        tl.store(part_max_ptr + pid, vmax)
        if COUNT:
            # A store, not an atomic on the running count: an atomic here spills on sm_90.
            tl.store(part_nonfinite_ptr + pid, nonfinite.to(tl.int64))
            if LOCAL:
                _flush(counts_ptr, acc, NBINS, ACC_BINS)


@triton.jit
def _histc_kernel(
    x_ptr,
    n,
    lo_ptr,
    hi_ptr,
    part_min_ptr,
    part_max_ptr,
    n_parts,
    counts_ptr,
    tiles,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    PARTS_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    GROUP: tl.constexpr = 1,
):
    """``counts[trunc((v - lo) * NBINS / (hi - lo))] += 1`` for finite ``v`` in ``[lo, hi]``.

    ``lo == hi`` becomes the finite min/max of ``x`` (the stats pre-pass's partials), then
    ``[c - 1, c + 1]`` for a single point ``c``; nothing is counted when ``x`` has no finite value.
    """
    lo = tl.load(lo_ptr)
    hi = tl.load(hi_ptr)
    if lo == hi:
        x_lo, x_hi = _reduce_partials(part_min_ptr, part_max_ptr, n_parts, PARTS_P2)
        seen = x_lo <= x_hi
        lo = tl.where(seen, x_lo, lo)
        hi = tl.where(seen, x_hi, hi)
    if lo <= hi:
        _count_tiles(
            x_ptr,
            n,
            lo,
            hi,
            counts_ptr,
            tl.program_id(0),
            tiles,
            NBINS,
            ACC_BINS,
            LOCAL,
            BLOCK,
            GROUP,
        )


def stats_config(bins: int, count: bool, itemsize: int = 4) -> LaunchConfig:
    """The launch of ``_histogram_stats_kernel`` over elements of ``itemsize`` bytes: the
    observer's fused pass (``count``) or ``histc``'s pre-pass (min/max only: ``GROUP_TILES`` tiles
    per load for every size; two tiles of float64 there make ptxas spill)."""
    tiles = group(bins, itemsize) if count else GROUP_TILES
    constexprs = {**counting(bins), "COUNT": count, "BLOCK": BLOCK, "GROUP": tiles}
    return LaunchConfig(_histogram_stats_kernel, constexprs, options(NUM_WARPS))


def histc_config(bins: int, programs: int, itemsize: int = 4) -> LaunchConfig:
    """The launch of ``_histc_kernel`` after a pre-pass of at most ``programs`` programs."""
    constexprs = {
        **counting(bins),
        "PARTS_P2": next_power_of_2(programs),
        "BLOCK": BLOCK,
        "GROUP": group(bins, itemsize),
    }
    return LaunchConfig(_histc_kernel, constexprs, options(NUM_WARPS))


@functools.cache
def _histc_plan(
    numel: int, device: torch.device, bins: int, itemsize: int
) -> tuple[tuple[int], dict, dict]:
    """``(grid, stats kwargs, histc kwargs)`` of a ``histc`` launch pair."""
    programs, tiles = stream_grid(numel, device)
    stats = stats_config(bins, False, itemsize).kwargs
    histc = histc_config(bins, max_programs(device), itemsize).kwargs
    return (programs,), {"tiles": tiles, **stats}, {"tiles": tiles, **histc}


def histc_triton(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Triton launcher of ``tritonobs::histc`` (two launches, no host sync).

    Args:
        x: floating-point tensor, any shape and strides.
        lo: 0-d float32 lower edge on ``x``'s device.
        hi: 0-d float32 upper edge, ``>= lo``.
        bins: number of bins.

    Returns:
        int64 ``[bins]`` counts.
    """
    device = x.device
    flat = flat_view(x)
    lo = lo.to(torch.float32)
    hi = hi.to(torch.float32)
    counts = torch.zeros(bins, dtype=torch.int64, device=device)
    grid, stats, histc = _histc_plan(flat.numel(), device, bins, flat.element_size())
    partials = workspace(device, "histc_partials", 2 * grid[0], torch.float32)
    part_min, part_max = partials[: grid[0]], partials[grid[0] : 2 * grid[0]]
    with device_guard(device):
        # part_nonfinite_ptr: unused without COUNT.
        _histogram_stats_kernel[grid](
            flat, flat.numel(), lo, hi, part_min, part_max, counts, counts, **stats
        )
        _histc_kernel[grid](
            flat, flat.numel(), lo, hi, part_min, part_max, grid[0], counts, **histc
        )
    return counts


def _stats_signature(dtype: str) -> dict[str, str]:
    return {
        "x_ptr": f"*{dtype}",
        "n": "i64",
        "lo_ptr": "*fp32",
        "hi_ptr": "*fp32",
        "part_min_ptr": "*fp32",
        "part_max_ptr": "*fp32",
        "part_nonfinite_ptr": "*i64",
        "counts_ptr": "*i64",
        "tiles": "i32",
    }


def _histc_signature(dtype: str) -> dict[str, str]:
    return {
        "x_ptr": f"*{dtype}",
        "n": "i64",
        "lo_ptr": "*fp32",
        "hi_ptr": "*fp32",
        "part_min_ptr": "*fp32",
        "part_max_ptr": "*fp32",
        "n_parts": "i32",
        "counts_ptr": "*i64",
        "tiles": "i32",
    }


# Every input dtype (float64 is read as such and rounded to float32 in the kernel) with the default
# 2048 bins, and fp32 with more than LOCAL_HIST_MAX_BINS bins (an atomic per value): the observer's
# fused pass, histc's pre-pass and histc's count. On an H200: 4 programs x 132 SMs.
INPUT_DTYPES = ("fp32", "fp16", "bf16", "fp64")
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8}
_SPEC_PROGRAMS = PROGRAMS_PER_SM * SPEC_SMS
COMPILE_SPECS = [
    *(stats_config(2048, True, ITEMSIZE[dt]).spec(_stats_signature(dt)) for dt in INPUT_DTYPES),
    stats_config(8192, count=True).spec(_stats_signature("fp32")),
    *(stats_config(2048, False, ITEMSIZE[dt]).spec(_stats_signature(dt)) for dt in INPUT_DTYPES),
    *(
        histc_config(2048, _SPEC_PROGRAMS, ITEMSIZE[dt]).spec(_histc_signature(dt))
        for dt in INPUT_DTYPES
    ),
    histc_config(8192, _SPEC_PROGRAMS).spec(_histc_signature("fp32")),
]
