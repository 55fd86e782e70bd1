"""ModelOpt's ``HistogramCalibrator.collect`` on the device: ``tritonobs::amax_histogram_update``.

Three launches, every decision taken on the device (the host reads nothing):

1. ``_amax_stats_kernel``: per program, the max of the finite ``|v|`` and the NaN/inf count
   (partials).
2. ``_amax_count_kernel``: every program reduces the partials and decides, from the state (which
   nobody writes during the launch), what the reference does with the batch: nothing, count it
   into the current bins, grow the bins (``ceil(x_max / width)`` bins, ``arange`` edges), or start
   over (first batch, or the first ``x_max > 0`` after zeros only); or refuse it (capacity
   exceeded). Program 0 records the decision and adds the NaN/inf count to ``nonfinite_count``;
   then, when the batch is counted, every program counts its tiles of ``|v|`` into int64
   counters (one atomic per value: the number of bins is only known on the device).
3. ``_amax_apply_kernel``: reads the recorded decision (not the state), writes the edges (ModelOpt's
   ``linspace`` / ``arange``), ``histogram[:num_bins] += float32(counts)`` (or ``=`` on a first
   batch), ``num_bins``/``num_edges``, and zeroes the counters it consumed.

The edges are the values the reference computes with torch 2.13's CPU kernels (``ModelOpt`` on CPU,
what the tests compare with): ``linspace``'s first half ``RN(step * i)``, its second half
``fma(-step, bins - i, end)`` (as the compiler contracts it), ``step = RN(end / bins)``; ``arange``
accumulates in float64 and its vectorised loop (8 floats, 16 per iteration, restarted per
``parallel_for`` chunk of a ``torch.get_num_threads()``-way split past 32768 edges) adds ``j * step``
to a float32 base ``RN(step * i0)``. Each is evaluated here in float64, where it is exact, and
rounded once to float32.

Workspaces (``tritonobs.kernels._launch.workspace``, one per device): int64 counters of
``max_bins``, zero between forwards (launch 2 adds, launch 3 re-zeroes); float32 max partials,
int64 NaN/inf partials and the float64 decision record, written before they are read.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import (
    SPEC_SMS,
    LaunchConfig,
    cdiv,
    device_guard,
    next_power_of_2,
    options,
    workspace,
)
from tritonobs.kernels.histc import (
    BLOCK,
    GROUP_TILES,
    INPUT_DTYPES,
    ITEMSIZE,
    NUM_WARPS,
    PROGRAMS_PER_SM,
    _load,
    _tiles_of,
    flat_view,
    max_programs,
    stream_grid,
)

# Edges and bins per program of the apply launch; bins per step of the zeros-only sum.
APPLY_BLOCK = 1024
APPLY_WARPS = 4
SUM_BLOCK = 1024
# torch's CPU arange: 8 floats per vector, two vectors per loop iteration, and parallel_for's
# grain (a split into threads only past it).
ARANGE_VEC: tl.constexpr = tl.constexpr(8)
ARANGE_GRAIN: tl.constexpr = tl.constexpr(32768)
# Decision cases: nothing, count into the current bins, grow, start over, refuse (capacity).
SKIP: tl.constexpr = tl.constexpr(0)
COUNT: tl.constexpr = tl.constexpr(1)
GROW: tl.constexpr = tl.constexpr(2)
FIRST: tl.constexpr = tl.constexpr(3)
OVERFLOW: tl.constexpr = tl.constexpr(4)


@triton.jit
def _abs_stats(v, in_bounds, vmax, nonfinite):
    """One tile of :func:`_amax_stats_kernel`: the running max of the finite ``|v|``, NaN/inf count."""
    a = tl.abs(v)
    finite = in_bounds & (a < float("inf"))
    vmax = tl.maximum(vmax, tl.max(tl.where(finite, a, float("-inf")), axis=0))
    nonfinite += tl.sum((in_bounds & ~finite).to(tl.int32), axis=0)
    return vmax, nonfinite


@triton.jit
def _amax_stats_kernel(
    x_ptr,
    n,
    part_max_ptr,
    part_nonfinite_ptr,
    tiles,
    BLOCK: tl.constexpr,
    GROUP: tl.constexpr,
):
    """Per program: ``part_max[pid] = max |v|`` over its finite values (``-inf`` when none) and
    ``part_nonfinite[pid] = sum(!finite)``."""
    pid = tl.program_id(0)
    vmax = tl.full((), float("-inf"), tl.float32)
    nonfinite = tl.zeros((), tl.int32)
    first, grouped, stop, full, ragged = _tiles_of(n, pid, tiles, GROUP, BLOCK)
    for t in range(first, grouped, GROUP):
        v, in_bounds = _load(x_ptr, t * BLOCK, n, GROUP * BLOCK, False)
        vmax, nonfinite = _abs_stats(v, in_bounds, vmax, nonfinite)
    if grouped < stop:
        v, in_bounds = _load(x_ptr, grouped * BLOCK, stop * BLOCK, GROUP * BLOCK, True)
        vmax, nonfinite = _abs_stats(v, in_bounds, vmax, nonfinite)
    if ragged:
        v, in_bounds = _load(x_ptr, full * BLOCK, n, BLOCK, True)
        vmax, nonfinite = _abs_stats(v, in_bounds, vmax, nonfinite)
    tl.store(part_max_ptr + pid, vmax)
    tl.store(part_nonfinite_ptr + pid, nonfinite.to(tl.int64))


@triton.jit
def _linspace_at(i, end, bins):
    """``torch.linspace(0, end, bins + 1)[i]`` (CPU, float32)."""
    step = tl.math.div_rn(end, bins.to(tl.float32)).to(tl.float64)
    low = (step * i.to(tl.float64)).to(tl.float32)
    high = (end.to(tl.float64) - step * (bins - i).to(tl.float64)).to(tl.float32)
    return tl.where(i < (bins + 1) // 2, low, high)


@triton.jit
def _arange_at(i, n, width, threads):
    """``torch.arange(0, end, width)[i]`` (CPU, float32) of an ``arange`` of ``n`` values."""
    n = tl.maximum(n, 1)
    tasks = tl.where(
        n > ARANGE_GRAIN, tl.minimum(threads, (n + ARANGE_GRAIN - 1) // ARANGE_GRAIN), 1
    )
    chunk = (n + tasks - 1) // tasks
    start = i // chunk * chunk
    offset = i - start
    length = tl.minimum(start + chunk, n) - start
    vectorised = offset < length // (2 * ARANGE_VEC) * (2 * ARANGE_VEC)
    base_index = tl.where(vectorised, start + offset // ARANGE_VEC * ARANGE_VEC, i)
    w = width.to(tl.float64)
    base = (w * base_index.to(tl.float64)).to(tl.float32)
    return (base.to(tl.float64) + (i - base_index).to(tl.float64) * w).to(tl.float32)


@triton.jit
def _decide(
    part_max_ptr,
    n_parts,
    edges_ptr,
    num_bins_ptr,
    num_edges_ptr,
    capacity,
    bins,
    threads,
    SKIP_ZEROS: tl.constexpr,
    PARTS_P2: tl.constexpr,
):
    """The reference's step for this batch, from the partials and the state.

    Returns:
        ``(case, nbins, nedges, hi, x_max, width, live, restart, used)``: the case (``SKIP``,
        ``COUNT``, ``GROW``, ``FIRST``, ``OVERFLOW``), ``num_bins`` and ``num_edges`` after it
        (``nbins``: the refused need on ``OVERFLOW``), the upper edge the batch is counted up to,
        the batch's max ``|v|``, the bin width of a growth, whether the state had not overflowed
        before, whether a first batch starts over after zeros only, and the bins in use before.
    """
    offs = tl.arange(0, PARTS_P2)
    x_max = tl.max(tl.load(part_max_ptr + offs, mask=offs < n_parts, other=float("-inf")), axis=0)
    used = tl.load(num_bins_ptr)
    n_edges = tl.load(num_edges_ptr)
    live = used <= capacity
    if SKIP_ZEROS:
        has_values = x_max > 0.0
    else:
        has_values = x_max >= 0.0
    hi_old = tl.load(edges_ptr + tl.maximum(n_edges - 1, 0))
    edge1 = tl.load(edges_ptr + 1)
    passes = x_max > hi_old
    restart = (used > 0) & passes & (edge1 == 0.0)
    first = (used == 0) | restart
    grow = ~first & passes
    width = tl.where(grow, edge1 - tl.load(edges_ptr), 1.0)
    # ceil(x_max / width) in float32; the arange's length ceil((x_max + width) / width) in
    # float64. Outside [0, 2^62] (no value, or the reference fails on the host) they are clamped.
    grown = tl.math.ceil(tl.math.div_rn(x_max, width))
    grown = tl.minimum(tl.maximum(grown, 0.0), 2.0**62).to(tl.int64)
    end = (x_max + width).to(tl.float64)
    grown_edges = tl.math.ceil(end / width.to(tl.float64))
    grown_edges = tl.minimum(tl.maximum(grown_edges, 0.0), 2.0**62).to(tl.int64)
    grow_overflow = (grown > capacity) | (grown_edges > capacity + 1)
    refused = tl.where(first, bins > capacity, grow & grow_overflow)
    overflow_bins = tl.where(
        first, bins, tl.maximum(tl.maximum(grown, grown_edges - 1), capacity + 1).to(tl.int64)
    )
    case = tl.where(first, FIRST, tl.where(grow, GROW, COUNT))
    case = tl.where(refused, OVERFLOW, case)
    case = tl.where(live & has_values, case, SKIP)
    nbins = tl.where(first, bins, tl.where(grow, grown, used))
    nbins = tl.where(refused, overflow_bins, nbins)
    nedges = tl.where(first, bins + 1, tl.where(grow, grown_edges, n_edges))
    grown_hi = _arange_at(tl.maximum(grown_edges - 1, 0), grown_edges, width, threads)
    hi = tl.where(first, x_max, tl.where(grow, grown_hi, hi_old))
    return case, nbins, nedges, hi, x_max, width, live, restart, used


@triton.jit
def _count_abs(v, in_bounds, hi, lo, span, nbins, counts_ptr, SKIP_ZEROS: tl.constexpr):
    """``counts[min(trunc((|v| - lo) * nbins / span), nbins - 1)] += 1`` for ``|v| <= hi``
    (torch.histc's bin; an overflowing product lands in bin 0, as there)."""
    a = tl.abs(v)
    counted = in_bounds & (a <= hi)
    if SKIP_ZEROS:
        counted = counted & (a != 0.0)
    p = (tl.where(counted, a, 0.0) - lo) * nbins.to(tl.float32)
    p = tl.where(p < float("inf"), p, 0.0)
    b = tl.minimum(tl.math.div_rn(p, span).to(tl.int32), nbins - 1)
    tl.atomic_add(counts_ptr + b, counted.to(tl.int64), mask=counted, sem="relaxed")


@triton.jit
def _amax_count_kernel(
    x_ptr,
    n,
    part_max_ptr,
    part_nonfinite_ptr,
    n_parts,
    hist_ptr,
    edges_ptr,
    num_bins_ptr,
    num_edges_ptr,
    nonfinite_ptr,
    counts_ptr,
    decision_ptr,
    capacity,
    bins,
    threads,
    tiles,
    SKIP_ZEROS: tl.constexpr,
    PARTS_P2: tl.constexpr,
    SUM_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    GROUP: tl.constexpr,
):
    """Decides (:func:`_decide`); program 0 writes ``decision = [case, nbins, nedges, x_max, width,
    zeros]`` (``zeros``: ``sum(hist[:used])`` when starting over after zeros only) and adds
    ``sum(part_nonfinite)`` to ``nonfinite`` (unless the state had overflowed). When the batch is
    counted, over ``[0, hi]`` (``[-1, 1]`` when ``hi == 0``) into ``nbins`` bins:
    ``counts[trunc((|v| - lo) * nbins / (hi - lo))] += 1`` for the program's tiles."""
    pid = tl.program_id(0)
    # Runtime integers that a launch may pass as 1 (compiled as constants): tensors from here.
    bins = bins + tl.zeros((), tl.int32)
    threads = threads + tl.zeros((), tl.int32)
    case, nbins, nedges, hi, x_max, width, live, restart, used = _decide(
        part_max_ptr, n_parts, edges_ptr, num_bins_ptr, num_edges_ptr, capacity, bins, threads,
        SKIP_ZEROS, PARTS_P2,
    )  # fmt: skip
    if pid == 0:
        zeros = tl.zeros((), tl.float32)
        for start in range(0, tl.where(restart & (case == FIRST), used, 0), SUM_BLOCK):
            offs = start + tl.arange(0, SUM_BLOCK)
            zeros += tl.sum(tl.load(hist_ptr + offs, mask=offs < used, other=0.0), axis=0)
        tl.store(decision_ptr, case.to(tl.float64))
        tl.store(decision_ptr + 1, nbins.to(tl.float64))
        tl.store(decision_ptr + 2, nedges.to(tl.float64))
        tl.store(decision_ptr + 3, x_max.to(tl.float64))
        tl.store(decision_ptr + 4, width.to(tl.float64))
        tl.store(decision_ptr + 5, zeros.to(tl.float64))
        parts = tl.arange(0, PARTS_P2)
        skipped = tl.sum(tl.load(part_nonfinite_ptr + parts, mask=parts < n_parts, other=0))
        if live & (skipped > 0):
            tl.store(nonfinite_ptr, tl.load(nonfinite_ptr) + skipped)
    if (case >= COUNT) & (case <= FIRST):
        zero_range = hi == 0.0
        lo = tl.where(zero_range, -1.0, 0.0)
        span = tl.where(zero_range, 2.0, hi)
        first, grouped, stop, full, ragged = _tiles_of(n, pid, tiles, GROUP, BLOCK)
        for t in range(first, grouped, GROUP):
            v, in_bounds = _load(x_ptr, t * BLOCK, n, GROUP * BLOCK, False)
            _count_abs(v, in_bounds, hi, lo, span, nbins, counts_ptr, SKIP_ZEROS)
        if grouped < stop:
            v, in_bounds = _load(x_ptr, grouped * BLOCK, stop * BLOCK, GROUP * BLOCK, True)
            _count_abs(v, in_bounds, hi, lo, span, nbins, counts_ptr, SKIP_ZEROS)
        if ragged:
            v, in_bounds = _load(x_ptr, full * BLOCK, n, BLOCK, True)
            _count_abs(v, in_bounds, hi, lo, span, nbins, counts_ptr, SKIP_ZEROS)


@triton.jit
def _amax_apply_kernel(
    hist_ptr,
    edges_ptr,
    num_bins_ptr,
    num_edges_ptr,
    counts_ptr,
    decision_ptr,
    capacity,
    bins,
    threads,
    BLOCK: tl.constexpr,
):
    """The recorded case, applied to this program's block of bins and edges:

    * ``COUNT``: ``hist[i] += float32(counts[i])`` for ``i < num_bins``;
    * ``GROW``: the same over the grown bins, ``edges = arange(0, x_max + width, width)``;
    * ``FIRST``: ``hist[:bins] = float32(counts)`` (``hist[0] += zeros``),
      ``edges = linspace(0, x_max, bins + 1)``, zeros past them;
    * ``OVERFLOW``: only ``num_bins`` (the refused need) is written.

    Then ``counts`` is 0 again, and program 0 writes ``num_bins`` and ``num_edges``.
    """
    pid = tl.program_id(0)
    bins = bins + tl.zeros((), tl.int32)
    threads = threads + tl.zeros((), tl.int32)
    case = tl.load(decision_ptr).to(tl.int32)
    nbins = tl.load(decision_ptr + 1).to(tl.int64)
    nedges = tl.load(decision_ptr + 2).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_hist = offs < capacity
    used = in_hist & (offs < nbins)
    if case == FIRST:
        x_max = tl.load(decision_ptr + 3).to(tl.float32)
        zeros = tl.load(decision_ptr + 5).to(tl.float32)
        counts = tl.load(counts_ptr + offs, mask=used, other=0).to(tl.float32)
        tl.store(hist_ptr + offs, tl.where(offs == 0, counts + zeros, counts), mask=in_hist)
        edges = tl.where(offs <= bins, _linspace_at(offs, x_max, bins), 0.0)
        tl.store(edges_ptr + offs, edges, mask=offs <= capacity)
    if case == GROW:
        width = tl.load(decision_ptr + 4).to(tl.float32)
        edges = tl.where(offs < nedges, _arange_at(offs, nedges, width, threads), 0.0)
        tl.store(edges_ptr + offs, edges, mask=offs <= capacity)
    if (case == COUNT) | (case == GROW):
        h = tl.load(hist_ptr + offs, mask=used)
        counts = tl.load(counts_ptr + offs, mask=used)
        tl.store(hist_ptr + offs, h + counts.to(tl.float32), mask=used)
    if (case >= COUNT) & (case <= FIRST):
        tl.store(counts_ptr + offs, tl.zeros((BLOCK,), tl.int64), mask=used)
    if (pid == 0) & (case >= GROW):
        tl.store(num_bins_ptr, nbins)
        if case != OVERFLOW:
            tl.store(num_edges_ptr, nedges)


def stats_config(itemsize: int = 4) -> LaunchConfig:
    """The launch of ``_amax_stats_kernel`` over elements of ``itemsize`` bytes."""
    constexprs = {"BLOCK": BLOCK, "GROUP": GROUP_TILES // 2 if itemsize > 4 else GROUP_TILES}
    return LaunchConfig(_amax_stats_kernel, constexprs, options(NUM_WARPS))


def count_config(programs: int, skip_zeros: bool, itemsize: int = 4) -> LaunchConfig:
    """The launch of ``_amax_count_kernel`` after a stats pass of at most ``programs`` programs."""
    constexprs = {
        "SKIP_ZEROS": skip_zeros,
        "PARTS_P2": next_power_of_2(programs),
        "SUM_BLOCK": SUM_BLOCK,
        "BLOCK": BLOCK,
        "GROUP": 1,
    }
    return LaunchConfig(_amax_count_kernel, constexprs, options(NUM_WARPS))


def apply_config() -> LaunchConfig:
    """The launch of ``_amax_apply_kernel``."""
    return LaunchConfig(_amax_apply_kernel, {"BLOCK": APPLY_BLOCK}, options(APPLY_WARPS))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The three launches of one forward over ``numel`` elements into ``capacity`` bins.

    Attributes:
        numel: elements of the input.
        programs: programs of the streaming passes (one partial each).
        stream_grid, apply_grid: the launch grids.
        stats: keyword arguments of the stats launch by the input's element size in bytes.
        count: keyword arguments of the count launch by (element size, skip_zeros).
        apply: keyword arguments of the apply launch.
        part_max, part_nonfinite, decision, counts: workspace views.
    """

    numel: int
    programs: int
    stream_grid: tuple[int]
    apply_grid: tuple[int]
    stats: dict[int, dict[str, object]]
    count: dict[tuple[int, bool], dict[str, object]]
    apply: dict[str, object]
    part_max: torch.Tensor
    part_nonfinite: torch.Tensor
    decision: torch.Tensor
    counts: torch.Tensor


_PLANS: dict[tuple[int, torch.device, int], Plan] = {}


def _plan(numel: int, device: torch.device, capacity: int) -> Plan:
    programs, tiles = stream_grid(numel, device)
    most = max_programs(device)
    itemsizes = sorted(set(ITEMSIZE.values()))
    return Plan(
        numel=numel,
        programs=programs,
        stream_grid=(programs,),
        apply_grid=(cdiv(capacity + 1, APPLY_BLOCK),),
        stats={s: {"tiles": tiles, **stats_config(s).kwargs} for s in itemsizes},
        count={
            (s, skip): {"tiles": tiles, **count_config(most, skip, s).kwargs}
            for s in itemsizes
            for skip in (False, True)
        },
        apply=apply_config().kwargs,
        part_max=workspace(device, "amax_histogram_partials", programs, torch.float32)[:programs],
        part_nonfinite=workspace(device, "amax_histogram_nonfinite", programs, torch.int64)[
            :programs
        ],
        decision=workspace(device, "amax_histogram_decision", 6, torch.float64)[:6],
        counts=workspace(device, "amax_histogram_counts", capacity, torch.int64)[:capacity],
    )


def plan_for(numel: int, device: torch.device, capacity: int) -> Plan:
    """The cached :class:`Plan` (by element count, device and capacity)."""
    key = (numel, device, capacity)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(numel, device, capacity)
    return plan


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
    """Triton launcher of ``tritonobs::amax_histogram_update``: three launches, in place, no sync.

    Args:
        x: floating-point tensor, any shape and strides (a tensor with gaps is copied first).
        histogram: float32 ``[max_bins]`` counts, contiguous.
        bin_edges: float32 ``[max_bins + 1]``, contiguous.
        num_bins: 0-d int64 bins in use (past ``max_bins``: overflowed).
        num_edges: 0-d int64 edges in use.
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values.
        bins: bins of the first batch.
        skip_zeros: drop the zeros of each batch.
    """
    device = x.device
    flat = flat_view(x)
    capacity = histogram.numel()
    plan = plan_for(flat.numel(), device, capacity)
    itemsize = flat.element_size()
    threads = torch.get_num_threads()
    with device_guard(device):
        _amax_stats_kernel[plan.stream_grid](
            flat, plan.numel, plan.part_max, plan.part_nonfinite, **plan.stats[itemsize]
        )
        _amax_count_kernel[plan.stream_grid](
            flat, plan.numel, plan.part_max, plan.part_nonfinite, plan.programs, histogram,
            bin_edges, num_bins, num_edges, nonfinite_count, plan.counts, plan.decision, capacity,
            bins, threads, **plan.count[itemsize, skip_zeros],
        )  # fmt: skip
        _amax_apply_kernel[plan.apply_grid](
            histogram, bin_edges, num_bins, num_edges, plan.counts, plan.decision, capacity, bins,
            threads, **plan.apply,
        )  # fmt: skip


def _stats_signature(dtype: str) -> dict[str, str]:
    return {
        "x_ptr": f"*{dtype}",
        "n": "i64",
        "part_max_ptr": "*fp32",
        "part_nonfinite_ptr": "*i64",
        "tiles": "i32",
    }


def _count_signature(dtype: str) -> dict[str, str]:
    return {
        "x_ptr": f"*{dtype}",
        "n": "i64",
        "part_max_ptr": "*fp32",
        "part_nonfinite_ptr": "*i64",
        "n_parts": "i32",
        "hist_ptr": "*fp32",
        "edges_ptr": "*fp32",
        "num_bins_ptr": "*i64",
        "num_edges_ptr": "*i64",
        "nonfinite_ptr": "*i64",
        "counts_ptr": "*i64",
        "decision_ptr": "*fp64",
        "capacity": "i32",
        "bins": "i32",
        "threads": "i32",
        "tiles": "i32",
    }


_APPLY_SIGNATURE = {
    "hist_ptr": "*fp32",
    "edges_ptr": "*fp32",
    "num_bins_ptr": "*i64",
    "num_edges_ptr": "*i64",
    "counts_ptr": "*i64",
    "decision_ptr": "*fp64",
    "capacity": "i32",
    "bins": "i32",
    "threads": "i32",
}

# Each input dtype for both streaming launches (with and without skip_zeros for the count); the
# apply launch. On an H200: 4 programs x 132 SMs.
_SPEC_PROGRAMS = PROGRAMS_PER_SM * SPEC_SMS
COMPILE_SPECS = [
    *(stats_config(ITEMSIZE[dt]).spec(_stats_signature(dt)) for dt in INPUT_DTYPES),
    *(
        count_config(_SPEC_PROGRAMS, skip, ITEMSIZE[dt]).spec(_count_signature(dt))
        for dt in INPUT_DTYPES
        for skip in (False, True)
    ),
    apply_config().spec(_APPLY_SIGNATURE),
]
