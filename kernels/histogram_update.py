"""HistogramObserver's forward on the device: ``tritonobs::histogram_update``, in place, no sync.

Three launches, every decision taken on the device from the running range and the batch's partials:

1. ``_histogram_stats_kernel`` (``kernels/histc.py``, ``COUNT``): per-program finite min/max and
   NaN/inf count (partials), and the histogram of the batch over the *current* range (counts A).
   In the steady state, where the range does not grow, this is the only pass over the input.
2. ``_histogram_regrow_kernel``: every program decides the case from the partials and the running
   range, which nobody writes during the launch; program 0 records the decision and adds the
   NaN/inf count to ``nonfinite_count``. Unless the range grew (or this is the first batch), every
   program then exits. Otherwise the first programs count the batch over the new range (counts B)
   and the others re-bin the old histogram onto it (float64 sums, :mod:`kernels.histogram_rebin`).
3. ``_histogram_update_kernel``: reads the recorded decision (not the running range), writes the
   histogram in place (``hist + A``, or ``float32(rebinned) + B``), then the new range, and zeroes
   the counters it consumed.

Workspaces (``tritonobs.kernels._launch.workspace``, one per device): int64 ``[3, bins]`` for counts
A, counts B and the re-binned mass (float64 bits; 0 is 0.0), zero between forwards (launches 1 and
2 add into them, launch 3 re-zeroes them); float32 partials and the decision record, int64 NaN/inf
partials, written before they are read. The host looks up a cached plan and launches: no
allocation, no torch kernel.
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
    INPUT_DTYPES,
    ITEMSIZE,
    NUM_WARPS,
    PROGRAMS_PER_SM,
    _count_tiles,
    _histogram_stats_kernel,
    _reduce_partials,
    counting,
    flat_view,
    group,
    max_programs,
    stats_config,
    stream_grid,
)
from tritonobs.kernels.histogram_rebin import BLOCK_BINS, _rebin_scatter_rows, scatter_constexprs

# Bins per program of the final combine.
COMBINE_BLOCK = 1024
COMBINE_WARPS = 4


@triton.jit
def _decide(min_ptr, max_ptr, part_min_ptr, part_max_ptr, n_parts, PARTS_P2: tl.constexpr):
    """HistogramObserver's decision for this batch, on the device.

    Returns:
        ``(cur_lo, cur_hi, new_lo, new_hi, uninitialised, has_finite, grew)``: the current range,
        the range after the batch (``[min(cur_lo, batch_min), max(cur_hi, batch_max)]``, or the
        batch's own range on the first batch; the current range when the batch had no finite
        value), torch.ao's "uninitialised" test, whether the batch had a finite value, and whether
        the range changed (always on the first batch).
    """
    batch_lo, batch_hi = _reduce_partials(part_min_ptr, part_max_ptr, n_parts, PARTS_P2)
    cur_lo = tl.load(min_ptr)
    cur_hi = tl.load(max_ptr)
    uninitialised = (cur_lo == float("inf")) | (cur_hi == float("-inf"))
    has_finite = batch_lo <= batch_hi
    new_lo = tl.where(uninitialised, batch_lo, tl.minimum(cur_lo, batch_lo))
    new_hi = tl.where(uninitialised, batch_hi, tl.maximum(cur_hi, batch_hi))
    grew = uninitialised | (new_lo != cur_lo) | (new_hi != cur_hi)
    new_lo = tl.where(has_finite, new_lo, cur_lo)
    new_hi = tl.where(has_finite, new_hi, cur_hi)
    return cur_lo, cur_hi, new_lo, new_hi, uninitialised, has_finite, grew


@triton.jit
def _histogram_regrow_kernel(
    x_ptr,
    n,
    min_ptr,
    max_ptr,
    part_min_ptr,
    part_max_ptr,
    part_nonfinite_ptr,
    n_parts,
    nonfinite_ptr,
    hist_ptr,
    counts_ptr,
    rebinned_ptr,
    decision_ptr,
    tiles,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    PARTS_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    UPSAMPLE: tl.constexpr,
    UP_P2: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
    GROUP: tl.constexpr = 1,
):
    """When the range grew to ``[new_lo, new_hi]`` (or on the first batch), programs
    ``pid < n_parts``: ``counts[trunc((v - new_lo) * NBINS / (new_hi - new_lo))] += 1`` over their
    tiles of ``x``; programs ``n_parts + b``: ``rebinned[bucket(mid)] += hist[i] / UPSAMPLE`` for
    the old bins ``i`` of block ``b`` (initialised histograms only). Otherwise nothing.

    Program 0 writes ``decision = [new_lo, new_hi, case]`` (case: 0 no finite value, 1 same range,
    2 new range) for the combine, which must not read ``min``/``max`` while it writes them, and
    adds ``sum(part_nonfinite)`` to ``nonfinite``.
    """
    pid = tl.program_id(0)
    cur_lo, cur_hi, new_lo, new_hi, uninitialised, has_finite, grew = _decide(
        min_ptr, max_ptr, part_min_ptr, part_max_ptr, n_parts, PARTS_P2
    )
    if pid == 0:
        tl.store(decision_ptr, new_lo)
        tl.store(decision_ptr + 1, new_hi)
        tl.store(decision_ptr + 2, tl.where(has_finite, tl.where(grew, 2.0, 1.0), 0.0))
        parts = tl.arange(0, PARTS_P2)
        skipped = tl.sum(tl.load(part_nonfinite_ptr + parts, mask=parts < n_parts, other=0))
        if skipped > 0:
            tl.store(nonfinite_ptr, tl.load(nonfinite_ptr) + skipped)
    if has_finite & grew & (pid < n_parts):
        _count_tiles(
            x_ptr, n, new_lo, new_hi, counts_ptr, pid, tiles, NBINS, ACC_BINS, LOCAL, BLOCK, GROUP
        )
    if has_finite & grew & ~uninitialised & (pid >= n_parts):
        _rebin_scatter_rows(
            hist_ptr,
            cur_lo,
            cur_hi,
            new_lo,
            new_hi,
            rebinned_ptr,
            pid - n_parts,
            NBINS,
            UPSAMPLE,
            UP_P2,
            BLOCK_BINS,
        )


@triton.jit
def _histogram_update_kernel(
    hist_ptr,
    min_ptr,
    max_ptr,
    decision_ptr,
    counts_a_ptr,
    counts_b_ptr,
    rebinned_ptr,
    NBINS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The recorded case, applied bin by bin in place:

    * no finite value: nothing;
    * same range: ``hist += float32(counts_a)`` (the fused pass's counts over the current range);
    * new range: ``hist = float32(rebinned) + float32(counts_b)`` (``rebinned`` is 0 on the first
      batch), and program 0 writes ``min``/``max``.

    Then ``counts_a``, ``counts_b`` and ``rebinned`` are 0 again.
    """
    pid = tl.program_id(0)
    case = tl.load(decision_ptr + 2)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offs < NBINS
    if case == 1.0:
        h = tl.load(hist_ptr + offs, mask=in_bounds)
        counts_a = tl.load(counts_a_ptr + offs, mask=in_bounds)
        tl.store(hist_ptr + offs, h + counts_a.to(tl.float32), mask=in_bounds)
    if case == 2.0:
        counts_b = tl.load(counts_b_ptr + offs, mask=in_bounds).to(tl.float32)
        rebinned = tl.load(rebinned_ptr + offs, mask=in_bounds).to(tl.float32)
        tl.store(hist_ptr + offs, rebinned + counts_b, mask=in_bounds)
        tl.store(counts_b_ptr + offs, tl.zeros((BLOCK,), tl.int64), mask=in_bounds)
        tl.store(rebinned_ptr + offs, tl.zeros((BLOCK,), tl.float64), mask=in_bounds)
        if pid == 0:
            tl.store(min_ptr, tl.load(decision_ptr))
            tl.store(max_ptr, tl.load(decision_ptr + 1))
    tl.store(counts_a_ptr + offs, tl.zeros((BLOCK,), tl.int64), mask=in_bounds)


def regrow_config(bins: int, upsample_rate: int, programs: int, itemsize: int = 4) -> LaunchConfig:
    """The launch of ``_histogram_regrow_kernel`` after a pass of at most ``programs`` programs
    over elements of ``itemsize`` bytes."""
    constexprs = {
        **counting(bins),
        **scatter_constexprs(bins, upsample_rate),
        "PARTS_P2": next_power_of_2(programs),
        "BLOCK": BLOCK,
        "GROUP": group(bins, itemsize),
    }
    return LaunchConfig(_histogram_regrow_kernel, constexprs, options(NUM_WARPS))


def combine_config(bins: int) -> LaunchConfig:
    """The launch of ``_histogram_update_kernel``."""
    constexprs = {"NBINS": bins, "BLOCK": COMBINE_BLOCK}
    return LaunchConfig(_histogram_update_kernel, constexprs, options(COMBINE_WARPS))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The three launches of one forward over ``numel`` elements into ``bins`` bins on a device.

    Attributes:
        numel: elements of the input.
        programs: programs of the streaming passes (one partial each).
        stream_grid, regrow_grid, combine_grid: the launch grids.
        stats, regrow: keyword arguments of each streaming launch (``tiles``, then the config's
            constexprs and compile options) by the input's element size in bytes.
        combine: keyword arguments of the combine.
        part_min, part_max, decision: float32 views of the partials workspace.
        part_nonfinite: int64 NaN/inf partials (a workspace).
        counts_a, counts_b: int64 views of the counts workspace; rebinned: its float64 view.
    """

    numel: int
    programs: int
    stream_grid: tuple[int]
    regrow_grid: tuple[int]
    combine_grid: tuple[int]
    stats: dict[int, dict[str, object]]
    regrow: dict[int, dict[str, object]]
    combine: dict[str, object]
    part_min: torch.Tensor
    part_max: torch.Tensor
    decision: torch.Tensor
    part_nonfinite: torch.Tensor
    counts_a: torch.Tensor
    counts_b: torch.Tensor
    rebinned: torch.Tensor


_PLANS: dict[tuple[int, torch.device, int, int], Plan] = {}


def _plan(numel: int, device: torch.device, bins: int, upsample_rate: int) -> Plan:
    programs, tiles = stream_grid(numel, device)
    itemsizes = sorted(set(ITEMSIZE.values()))
    regrow = {s: regrow_config(bins, upsample_rate, max_programs(device), s) for s in itemsizes}
    counts = workspace(device, "histogram_update_counts", 3 * bins, torch.int64)
    partials = workspace(device, "histogram_update_partials", 2 * programs + 3, torch.float32)
    return Plan(
        numel=numel,
        programs=programs,
        stream_grid=(programs,),
        regrow_grid=(programs + cdiv(bins, BLOCK_BINS),),
        combine_grid=(cdiv(bins, COMBINE_BLOCK),),
        stats={s: {"tiles": tiles, **stats_config(bins, True, s).kwargs} for s in itemsizes},
        regrow={s: {"tiles": tiles, **regrow[s].kwargs} for s in itemsizes},
        combine=combine_config(bins).kwargs,
        part_min=partials[:programs],
        part_max=partials[programs : 2 * programs],
        decision=partials[2 * programs : 2 * programs + 3],
        part_nonfinite=workspace(device, "histogram_update_nonfinite", programs, torch.int64),
        counts_a=counts[:bins],
        counts_b=counts[bins : 2 * bins],
        rebinned=counts[2 * bins : 3 * bins].view(torch.float64),
    )


def plan_for(numel: int, device: torch.device, bins: int, upsample_rate: int) -> Plan:
    """The cached :class:`Plan` (by element count, device, bins and upsample rate)."""
    key = (numel, device, bins, upsample_rate)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(numel, device, bins, upsample_rate)
    return plan


def histogram_update_triton(
    x: torch.Tensor,
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    nonfinite_count: torch.Tensor,
    upsample_rate: int,
) -> None:
    """Triton launcher of ``tritonobs::histogram_update``: three launches, updates in place.

    Args:
        x: floating-point tensor, any shape and strides (a tensor with gaps is copied first).
        histogram: float32 ``[bins]`` running counts.
        min_val: 0-d float32 lower edge (``+inf`` while uninitialised).
        max_val: 0-d float32 upper edge (``-inf`` while uninitialised).
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values.
        upsample_rate: sub-bins per old bin when the range grows.

    Buffers of another dtype (or a non-contiguous histogram) round-trip through float32 copies:
    extra torch kernels on that rare path.
    """
    if not (
        histogram.dtype == min_val.dtype == max_val.dtype == torch.float32
        and histogram.is_contiguous()
    ):
        state = [
            v.to(torch.float32, memory_format=torch.contiguous_format)
            for v in (histogram, min_val, max_val)
        ]
        histogram_update_triton(x, *state, nonfinite_count, upsample_rate)
        for buffer, value in zip((histogram, min_val, max_val), state, strict=True):
            buffer.copy_(value)
        return
    device = x.device
    flat = flat_view(x)
    plan = plan_for(flat.numel(), device, histogram.numel(), upsample_rate)
    itemsize = flat.element_size()
    with device_guard(device):
        _histogram_stats_kernel[plan.stream_grid](
            flat, plan.numel, min_val, max_val, plan.part_min, plan.part_max, plan.part_nonfinite,
            plan.counts_a, **plan.stats[itemsize],
        )  # fmt: skip
        _histogram_regrow_kernel[plan.regrow_grid](
            flat, plan.numel, min_val, max_val, plan.part_min, plan.part_max, plan.part_nonfinite,
            plan.programs, nonfinite_count, histogram, plan.counts_b, plan.rebinned, plan.decision,
            **plan.regrow[itemsize],
        )  # fmt: skip
        _histogram_update_kernel[plan.combine_grid](
            histogram, min_val, max_val, plan.decision, plan.counts_a, plan.counts_b,
            plan.rebinned, **plan.combine,
        )  # fmt: skip


def _regrow_signature(dtype: str) -> dict[str, str]:
    return {
        "x_ptr": f"*{dtype}",
        "n": "i64",
        "min_ptr": "*fp32",
        "max_ptr": "*fp32",
        "part_min_ptr": "*fp32",
        "part_max_ptr": "*fp32",
        "part_nonfinite_ptr": "*i64",
        "n_parts": "i32",
        "nonfinite_ptr": "*i64",
        "hist_ptr": "*fp32",
        "counts_ptr": "*i64",
        "rebinned_ptr": "*fp64",
        "decision_ptr": "*fp32",
        "tiles": "i32",
    }


_COMBINE_SIGNATURE = {
    "hist_ptr": "*fp32",
    "min_ptr": "*fp32",
    "max_ptr": "*fp32",
    "decision_ptr": "*fp32",
    "counts_a_ptr": "*i64",
    "counts_b_ptr": "*i64",
    "rebinned_ptr": "*fp64",
}

# The re-pass for each input dtype with the default 2048 bins, and fp32 with more than
# LOCAL_HIST_MAX_BINS bins (an atomic per value); the combine. The fused pass is histc's.
_SPEC_PROGRAMS = PROGRAMS_PER_SM * SPEC_SMS
COMPILE_SPECS = [
    *(
        regrow_config(2048, 16, _SPEC_PROGRAMS, ITEMSIZE[dt]).spec(_regrow_signature(dt))
        for dt in INPUT_DTYPES
    ),
    regrow_config(8192, 16, _SPEC_PROGRAMS).spec(_regrow_signature("fp32")),
    combine_config(2048).spec(_COMBINE_SIGNATURE),
]
