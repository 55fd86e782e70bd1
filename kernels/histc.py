"""``torch.histc``-exact binning into integer counters: ``tritonobs::histc`` and HistogramObserver's passes.

Two streaming kernels, shared by ``histc`` and ``histogram_update``:

* :func:`_histogram_stats_kernel`: per-program min/max of the finite values and the count of
  NaN/inf, fused (``COUNT``) with the histogram of the values over the current range: in the
  observer's steady state (the range does not grow) this is the only pass over the input.
* :func:`_histc_kernel`: the histogram over a range decided on the device: ``[lo, hi]`` (``histc``;
  ``lo == hi`` becomes the finite min/max of ``x``, as ``torch.histc`` does), or (``UPDATE``) the
  observer's grown range, exiting at once when the range did not grow.

A value's bin is ``torch.histc``'s: ``trunc((v - lo) * NBINS / (hi - lo))`` in float32, in that
order, the division rounded to nearest (``div_rn``: a plain ``/`` is approximate on the GPU), with
``v == hi`` in the last bin. NaN and inf fail ``|v| < inf`` (libdevice's ``isnan``/``isinf`` do not
run under the interpreter). Counts go to int64 counters (a float32 ``+1`` stops at 2^24): up to
``LOCAL_HIST_MAX_BINS`` bins through a per-program register histogram (``tl.histogram``) flushed
with one atomic per bin, beyond that with one atomic per value. The range comes from device tensors
(a Python float argument would stay float64 under the interpreter and shift bins).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Up to this many bins a program keeps its counts in registers and flushes them once.
LOCAL_HIST_MAX_BINS = 4096
# Elements per tile. Streaming launches use about four programs per SM on a GPU and at most 16
# under the interpreter, whose programs run one after another.
BLOCK = 2048
NUM_WARPS = 8
INTERPRETER_PROGRAMS = 16


def max_programs(device: torch.device) -> int:
    """Upper bound on the programs of a streaming launch over ``device`` tensors."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_PROGRAMS


def stream_grid(numel: int, device: torch.device) -> tuple[int, int]:
    """``(programs, tiles_per_program)`` covering ``numel`` elements in tiles of ``BLOCK``."""
    tiles = triton.cdiv(numel, BLOCK)
    programs = max(1, min(tiles, max_programs(device)))
    return programs, triton.cdiv(tiles, programs)


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """``x``'s elements as a contiguous 1-D tensor, in memory order when ``x`` is a dense permutation.

    Order does not matter to a histogram or a min/max, so a transposed tensor is read in place; only
    tensors with gaps (slices) are copied.
    """
    if x.is_contiguous():
        return x.view(-1)
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    if permuted.is_contiguous():
        return permuted.view(-1)
    return x.contiguous().view(-1)


def counting(bins: int) -> dict[str, object]:
    """The counting constexprs for ``bins`` bins: registers up to ``LOCAL_HIST_MAX_BINS``, else atomics.

    Returns:
        ``{"NBINS", "LOCAL", "ACC_BINS"}``: ``ACC_BINS`` register counters (``bins`` rounded up to a
        power of two, at least 32), or 1 (unused) with one atomic per value.
    """
    local = bins <= LOCAL_HIST_MAX_BINS
    # At least one register bin per lane of a warp; the extra bins never receive a value.
    acc_bins = max(triton.next_power_of_2(bins), 32) if local else 1
    return {"NBINS": bins, "LOCAL": local, "ACC_BINS": acc_bins}


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
):
    """Per program: ``min``/``max`` of the finite values, ``sum(!finite)``, and with ``COUNT``
    ``counts[trunc((v - lo) * NBINS / (hi - lo))] += 1`` for finite ``v`` in the current range.

    ``COUNT`` (the observer's fused pass): ``[lo, hi]`` is the running range (nothing is counted
    while it is uninitialised; a single point ``c`` counts over ``[c - 1, c + 1]``). Without
    ``COUNT`` (``histc``'s pre-pass) the program exits at once unless ``lo == hi``.
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
        vmin = tl.full((BLOCK,), float("inf"), tl.float32)
        vmax = tl.full((BLOCK,), float("-inf"), tl.float32)
        nonfinite = tl.zeros((BLOCK,), tl.int32)
        acc = tl.zeros((ACC_BINS,), tl.int32)
        for t in range(tiles):
            offs = (pid * tiles + t).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            in_bounds = offs < n
            v = tl.load(x_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
            finite = in_bounds & (tl.abs(v) < float("inf"))
            nonfinite += (in_bounds & ~finite).to(tl.int32)
            vmin = tl.minimum(vmin, tl.where(finite, v, float("inf")))
            vmax = tl.maximum(vmax, tl.where(finite, v, float("-inf")))
            if COUNT:
                counted = finite & (v >= lo) & (v <= hi)
                t_bin = tl.math.div_rn((tl.where(counted, v, lo) - lo) * NBINS, width)
                b = tl.where(middle, NBINS // 2, tl.minimum(t_bin.to(tl.int32), NBINS - 1))
                if LOCAL:
                    acc += tl.histogram(b, ACC_BINS, mask=counted)
                else:
                    tl.atomic_add(counts_ptr + b, counted.to(tl.int64), mask=counted, sem="relaxed")
        tl.store(part_min_ptr + pid, tl.min(vmin, axis=0))
        tl.store(part_max_ptr + pid, tl.max(vmax, axis=0))
        tl.store(part_nonfinite_ptr + pid, tl.sum(nonfinite.to(tl.int64), axis=0))
        if COUNT and LOCAL:
            bins = tl.arange(0, ACC_BINS)
            tl.atomic_add(counts_ptr + bins, acc.to(tl.int64), mask=bins < NBINS, sem="relaxed")


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
    range_ptr,
    tiles,
    NBINS: tl.constexpr,
    ACC_BINS: tl.constexpr,
    LOCAL: tl.constexpr,
    UPDATE: tl.constexpr,
    PARTS_P2: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``counts[trunc((v - lo) * NBINS / (hi - lo))] += 1`` for finite ``v`` in a device-decided range.

    ``UPDATE=False`` (``histc``): ``[lo, hi]``; ``lo == hi`` becomes the finite min/max of ``x``
    (the stats pre-pass's partials), then ``[c - 1, c + 1]`` for a single point ``c``.
    ``UPDATE=True`` (the observer's re-pass): ``lo_ptr``/``hi_ptr`` hold the running range; program
    0 writes the range after this batch to ``range_ptr``, and every program exits at once unless the
    range grew (or this is the first batch) and the batch had a finite value.
    """
    pid = tl.program_id(0)
    if UPDATE:
        _, _, lo, hi, _, has_finite, grew = _decide(
            lo_ptr, hi_ptr, part_min_ptr, part_max_ptr, n_parts, PARTS_P2
        )
        if pid == 0:
            tl.store(range_ptr, lo)
            tl.store(range_ptr + 1, hi)
        active = has_finite & grew
    else:
        lo = tl.load(lo_ptr)
        hi = tl.load(hi_ptr)
        if lo == hi:
            x_lo, x_hi = _reduce_partials(part_min_ptr, part_max_ptr, n_parts, PARTS_P2)
            seen = x_lo <= x_hi
            lo = tl.where(seen, x_lo, lo)
            hi = tl.where(seen, x_hi, hi)
        active = lo <= hi
    if active:
        lo, hi, width, middle = _widen_degenerate(lo, hi)
        acc = tl.zeros((ACC_BINS,), tl.int32)
        for t in range(tiles):
            offs = (pid * tiles + t).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            in_bounds = offs < n
            v = tl.load(x_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
            counted = in_bounds & (tl.abs(v) < float("inf")) & (v >= lo) & (v <= hi)
            t_bin = tl.math.div_rn((tl.where(counted, v, lo) - lo) * NBINS, width)
            b = tl.where(middle, NBINS // 2, tl.minimum(t_bin.to(tl.int32), NBINS - 1))
            if LOCAL:
                acc += tl.histogram(b, ACC_BINS, mask=counted)
            else:
                tl.atomic_add(counts_ptr + b, counted.to(tl.int64), mask=counted, sem="relaxed")
        if LOCAL:
            bins = tl.arange(0, ACC_BINS)
            tl.atomic_add(counts_ptr + bins, acc.to(tl.int64), mask=bins < NBINS, sem="relaxed")


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
    flat = flat_view(x)
    lo = lo.to(torch.float32)
    hi = hi.to(torch.float32)
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    programs, tiles = stream_grid(flat.numel(), x.device)
    partials = torch.empty(2, programs, dtype=torch.float32, device=x.device)
    nonfinite = torch.empty(programs, dtype=torch.int64, device=x.device)
    _histogram_stats_kernel[(programs,)](
        flat, flat.numel(), lo, hi, partials[0], partials[1], nonfinite, counts, tiles,
        COUNT=False, BLOCK=BLOCK, num_warps=NUM_WARPS, **counting(bins),
    )  # fmt: skip
    _histc_kernel[(programs,)](
        flat, flat.numel(), lo, hi, partials[0], partials[1], programs, counts, lo, tiles,
        UPDATE=False, PARTS_P2=triton.next_power_of_2(max_programs(x.device)), BLOCK=BLOCK,
        num_warps=NUM_WARPS, **counting(bins),
    )  # fmt: skip
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
        "NBINS": "constexpr",
        "ACC_BINS": "constexpr",
        "LOCAL": "constexpr",
        "COUNT": "constexpr",
        "BLOCK": "constexpr",
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
        "range_ptr": "*fp32",
        "tiles": "i32",
        "NBINS": "constexpr",
        "ACC_BINS": "constexpr",
        "LOCAL": "constexpr",
        "UPDATE": "constexpr",
        "PARTS_P2": "constexpr",
        "BLOCK": "constexpr",
    }


# The observer's variants (fused stats, re-pass) for each input dtype with the default 2048 bins;
# histc's variants, and the atomic-per-value counting of more than LOCAL_HIST_MAX_BINS bins, in fp32.
# 132 SMs (H100/H200) -> 528 programs -> 1024 partials.
_OPTIONS = {"num_warps": NUM_WARPS}
COMPILE_SPECS = [
    *(
        (
            _histogram_stats_kernel,
            _stats_signature(dt),
            {**counting(2048), "COUNT": True, "BLOCK": BLOCK},
            _OPTIONS,
        )
        for dt in ("fp32", "fp16", "bf16")
    ),
    *(
        (
            _histc_kernel,
            _histc_signature(dt),
            {**counting(2048), "UPDATE": True, "PARTS_P2": 1024, "BLOCK": BLOCK},
            _OPTIONS,
        )
        for dt in ("fp32", "fp16", "bf16")
    ),
    (
        _histogram_stats_kernel,
        _stats_signature("fp32"),
        {**counting(2048), "COUNT": False, "BLOCK": BLOCK},
        _OPTIONS,
    ),
    (
        _histc_kernel,
        _histc_signature("fp32"),
        {**counting(2048), "UPDATE": False, "PARTS_P2": 1024, "BLOCK": BLOCK},
        _OPTIONS,
    ),
    (
        _histogram_stats_kernel,
        _stats_signature("fp32"),
        {**counting(8192), "COUNT": True, "BLOCK": BLOCK},
        _OPTIONS,
    ),
    (
        _histc_kernel,
        _histc_signature("fp32"),
        {**counting(8192), "UPDATE": True, "PARTS_P2": 1024, "BLOCK": BLOCK},
        _OPTIONS,
    ),
]
