"""``tritonobs::amax_histogram_update``: one ModelOpt ``HistogramCalibrator.collect`` step, in place.

ModelOpt 0.47.0's collector (``torch_hist=True``) keeps a histogram of ``|x|`` in float32 counts
over ``[0, amax]``:

* first batch: ``bins`` bins, ``histc(|x|, bins, 0, x_max)`` and edges
  ``linspace(0, x_max, bins + 1)``;
* later batches: if ``x_max`` passes the last edge, the bin width ``w = edges[1] - edges[0]`` is
  kept and bins are appended: ``n = ceil(x_max / w)`` bins (float32 quotient) and edges
  ``arange(0, x_max + w, w)`` (whose length, computed by ``arange`` in float64, may differ from
  ``n + 1``); the batch is counted by ``histc(|x|, n, 0, edges[-1])`` (values past ``edges[-1]``
  are dropped) and the old counts are added to the first bins.

With ``skip_zeros`` the zeros of each batch are dropped first. The histogram grows, so the buffers
here have a fixed capacity (``histogram``: ``max_bins``, ``bin_edges``: ``max_bins + 1``, zeros past
the used part) and two counters say how much is used: ``num_bins`` (ModelOpt's ``_num_bins``, the
length of ``_calib_hist``) and ``num_edges`` (the length of ``_calib_bin_edges``). A batch that would
need more than ``max_bins`` bins leaves the buffers as they are and sets ``num_bins`` to the bins
it needs, past the capacity: the state is then marked as overflowed for good (later batches are
ignored) and the observer refuses to compute from it.

Differences from ModelOpt, for input it cannot handle: NaN/inf are skipped and counted in
``nonfinite_count`` (ModelOpt's max becomes NaN/inf); an empty batch, or one with no finite (or,
with ``skip_zeros``, no non-zero) value changes nothing (ModelOpt raises); after batches of zeros
only (edges all 0, ModelOpt divides by a zero width and raises ``OverflowError``), a batch with
``x_max > 0`` starts the histogram over as a first batch and adds the zeros seen so far to bin 0.
"""

from __future__ import annotations

import math

import torch

from tritonobs.ops._dispatch import define_op
from tritonobs.ops.histc import count_in_range, histc_range


def _abs_values(
    x: torch.Tensor, nonfinite_count: torch.Tensor, skip_zeros: bool
) -> tuple[torch.Tensor, float] | None:
    # |x| of the finite (and, with skip_zeros, non-zero) values, and their max. 16-bit values stay
    # 16-bit (their float32 values are exact; count_in_range converts cache-sized chunks).
    a = x.reshape(-1)
    a = a.to(torch.float32).abs_() if a.dtype == torch.float64 else a.abs()
    x_max = a.max().item()
    if not math.isfinite(x_max):
        finite = torch.isfinite(a)
        nonfinite_count.add_(a.numel() - int(finite.sum()))
        a = a[finite]
        if a.numel() == 0:
            return None
        x_max = a.max().item()
    if skip_zeros:
        a = a[a != 0]
        if a.numel() == 0:
            return None
    return a, x_max


def first_edges(x_max: float, bins: int, device: torch.device) -> torch.Tensor:
    """ModelOpt's first edges: ``torch.linspace(0, x_max, bins + 1)`` in float32."""
    return torch.linspace(0, x_max, bins + 1, device=device)


def grown_edges(x_max: float, width: float, device: torch.device) -> tuple[int, torch.Tensor]:
    """ModelOpt's bins and edges once ``x_max`` passes the last edge.

    Args:
        x_max: the batch's max, a float32 value.
        width: ``edges[1] - edges[0]`` (float32), positive.
        device: where the edges go.

    Returns:
        ``(ceil(x_max / width), arange(0, x_max + width, width))``: the quotient and the sum are
        float32 operations, as on ModelOpt's 0-d tensors.
    """
    x_max32 = torch.tensor(x_max, dtype=torch.float32)
    width32 = torch.tensor(width, dtype=torch.float32)
    bins = int((x_max32 / width32).ceil().item())
    return bins, torch.arange(0, (x_max32 + width32).item(), width, device=device)


def _count(a: torch.Tensor, bins: int, hi: float, a_max: float) -> torch.Tensor:
    # torch.histc(a, bins, 0, hi): values past hi are dropped, a zero range is [-1, 1].
    lo, hi = histc_range(0.0, hi)
    if a_max > hi:
        a = a[a <= hi]
    return count_in_range(a, lo, hi, bins).to(torch.float32)


def amax_histogram_update_torch(
    x: torch.Tensor,
    histogram: torch.Tensor,
    bin_edges: torch.Tensor,
    num_bins: torch.Tensor,
    num_edges: torch.Tensor,
    nonfinite_count: torch.Tensor,
    bins: int,
    skip_zeros: bool,
) -> None:
    """Torch reference of :func:`amax_histogram_update` (branches on values read on the host)."""
    capacity = histogram.numel()
    used = int(num_bins.item())
    if used > capacity:
        return  # overflowed: the state is kept as it was when it overflowed
    values = _abs_values(x, nonfinite_count, skip_zeros)
    if values is None:
        return
    a, x_max = values
    n_edges = int(num_edges.item())
    zeros_before = 0.0
    if used and x_max > bin_edges[n_edges - 1].item() and bin_edges[1].item() == 0.0:
        # Only zeros so far (a zero width): start over, keeping the zeros in bin 0.
        zeros_before = histogram[:used].sum().item()
        used = 0
    if used == 0:
        if bins > capacity:
            num_bins.fill_(bins)
            return
        histogram.zero_()
        bin_edges.zero_()
        histogram[:bins] = _count(a, bins, x_max, x_max)
        histogram[0] += zeros_before
        bin_edges[: bins + 1] = first_edges(x_max, bins, x.device)
        num_bins.fill_(bins)
        num_edges.fill_(bins + 1)
        return
    hi = bin_edges[n_edges - 1].item()
    if x_max > hi:
        width = (bin_edges[1] - bin_edges[0]).item()
        used, edges = grown_edges(x_max, width, x.device)
        if used > capacity or edges.numel() > capacity + 1:
            num_bins.fill_(max(used, edges.numel() - 1, capacity + 1))
            return
        bin_edges.zero_()
        bin_edges[: edges.numel()] = edges
        num_bins.fill_(used)
        num_edges.fill_(edges.numel())
        hi = edges[-1].item()
    histogram[:used] += _count(a, used, hi, x_max)


def _amax_histogram_update_fake(
    x, histogram, bin_edges, num_bins, num_edges, nonfinite_count, bins, skip_zeros
):
    return None


@define_op(
    amax_histogram_update_torch,
    "amax_histogram_update:amax_histogram_update_triton",
    _amax_histogram_update_fake,
    mutates_args=("histogram", "bin_edges", "num_bins", "num_edges", "nonfinite_count"),
)
def amax_histogram_update(
    x: torch.Tensor,
    histogram: torch.Tensor,
    bin_edges: torch.Tensor,
    num_bins: torch.Tensor,
    num_edges: torch.Tensor,
    nonfinite_count: torch.Tensor,
    bins: int,
    skip_zeros: bool,
) -> None:
    """Fold ``|x|`` into a ModelOpt ``HistogramCalibrator`` histogram, in place.

    Args:
        x: a floating-point tensor, any shape and strides, at least one element; observed as
            float32 (as ModelOpt's ``x.float()``).
        histogram: float32 ``[max_bins]`` counts; the first ``num_bins`` are ModelOpt's
            ``_calib_hist``, the rest zeros.
        bin_edges: float32 ``[max_bins + 1]``; the first ``num_edges`` are ``_calib_bin_edges``.
        num_bins: 0-d int64, bins in use (0 before the first batch; past ``max_bins`` once the
            histogram has overflowed its capacity).
        num_edges: 0-d int64, edges in use.
        nonfinite_count: 0-d int64, incremented by the number of NaN/inf values skipped.
        bins: bins of the first batch (ModelOpt's ``num_bins``).
        skip_zeros: drop the zeros of each batch.
    """
