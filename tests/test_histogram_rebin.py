"""``tritonobs::histogram_rebin`` vs torch.ao's ``_combine_histograms`` (without new counts).

The torch backend runs torch.ao's own ops and matches it bit for bit. The Triton kernel computes
``torch.linspace`` as torch's CUDA kernel does, while torch's CPU ``linspace`` rounds in a vectorized
order of its own; a sub-bin mid-point within an ulp of a new bin's edge can then fall on the other
side. So on CPU tensors the Triton result is checked exactly against torch.ao's algorithm with the
CUDA ``linspace`` (a numpy model below), and against CPU torch.ao exactly where that was measured
exact (integer counts, the cases here) and within ``histogram_rebinned_fractional_mass`` otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver as AOHistogramObserver

import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.conftest import TOLERANCES
from tritonobs.ops.histogram_rebin import bucketize_right

pytestmark = pytest.mark.interpret


def rebin(histogram, orig_min, orig_max, new_min, new_max, upsample_rate=16):
    scalars = (torch.tensor(v, dtype=torch.float32) for v in (orig_min, orig_max, new_min, new_max))
    return torch.ops.tritonobs.histogram_rebin(histogram, *scalars, upsample_rate)


def torch_ao(histogram, orig_min, orig_max, new_min, new_max, upsample_rate=16):
    """torch.ao's re-binned histogram: ``_combine_histograms`` with an empty batch histogram."""
    observer = AOHistogramObserver(bins=histogram.numel())
    observer.upsample_rate = upsample_rate
    scalars = [torch.tensor(v, dtype=torch.float32) for v in (orig_min, orig_max, new_min, new_max)]
    return observer._combine_histograms(
        histogram, scalars[0], scalars[1], torch.zeros_like(histogram), scalars[2], scalars[3]
    )


def cuda_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace as torch's CUDA kernel computes it, in float32."""
    start, end = np.float32(start), np.float32(end)
    step = np.float32(end - start) / np.float32(steps - 1)
    i = np.arange(steps)
    first = start + step * i.astype(np.float32)
    second = end - step * (steps - 1 - i).astype(np.float32)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def torch_ao_with_cuda_linspace(histogram, orig_min, orig_max, new_min, new_max, upsample_rate=16):
    """torch.ao's ``_upscale_histogram`` in numpy with the CUDA linspace, sums in float64."""
    bins = histogram.numel()
    m = bins * upsample_rate
    sub_bin = np.float32(np.float32(orig_max) - np.float32(orig_min)) / np.float32(m)
    mids = cuda_linspace(orig_min, orig_max, m + 1)[:-1] + np.float32(0.5) * sub_bin
    edges = cuda_linspace(new_min, new_max, bins + 1)
    buckets = np.clip(np.searchsorted(edges, mids, side="right") - 1, 0, bins - 1)
    parts = np.repeat(histogram.numpy() / np.float32(upsample_rate), upsample_rate)
    summed = np.bincount(buckets, weights=parts.astype(np.float64), minlength=bins)
    return torch.from_numpy(summed.astype(np.float32))


def random_case(seed: int, bins: int, integer_counts: bool = True):
    g = torch.Generator().manual_seed(seed)
    histogram = torch.rand(bins, generator=g) * 100
    histogram = histogram.round() if integer_counts else histogram
    orig_min, orig_max = sorted((torch.randn(2, generator=g) * 5).tolist())
    grow_low, grow_high = (torch.rand(2, generator=g) * 4).tolist()
    return histogram, orig_min, orig_max, orig_min - grow_low, orig_max + grow_high


@pytest.mark.parametrize(("bins", "upsample_rate"), [(2048, 16), (37, 16), (5, 3), (1, 16)])
@pytest.mark.parametrize("integer_counts", [True, False])
def test_rebin_upscale(backend, bins, upsample_rate, integer_counts):
    histogram, *ranges = random_case(int(not integer_counts), bins, integer_counts)
    out = rebin(histogram, *ranges, upsample_rate)
    reference = torch_ao(histogram, *ranges, upsample_rate)
    if backend == "triton":
        model = torch_ao_with_cuda_linspace(histogram, *ranges, upsample_rate)
        torch.testing.assert_close(out, model, atol=0, rtol=0)
    if backend == "torch" or integer_counts:
        # Integer counts: every sum is exact in float32 too, and no sub-bin mid-point of these
        # ranges lies within an ulp of a new edge (measured), so the kernels equal CPU torch.ao.
        torch.testing.assert_close(out, reference, atol=0, rtol=0)
    else:
        moved = (out - reference).abs().sum() / reference.sum()
        assert moved <= TOLERANCES["histogram_rebinned_fractional_mass"]["rtol"], moved


@pytest.mark.parametrize("side", ["low", "high"])
def test_rebin_grows_on_one_side(backend, side):
    histogram, orig_min, orig_max, new_min, new_max = random_case(2, 64)
    ranges = (orig_min, orig_max, new_min, orig_max) if side == "low" else (
        orig_min, orig_max, orig_min, new_max
    )  # fmt: skip
    torch.testing.assert_close(
        rebin(histogram, *ranges), torch_ao(histogram, *ranges), atol=0, rtol=0
    )


def test_rebin_same_range_is_identity(backend):
    histogram = torch.rand(33, generator=torch.Generator().manual_seed(3))
    out = rebin(histogram, -1.5, 2.0, -1.5, 2.0)
    torch.testing.assert_close(out, histogram, atol=0, rtol=0)
    torch.testing.assert_close(out, torch_ao(histogram, -1.5, 2.0, -1.5, 2.0), atol=0, rtol=0)


@pytest.mark.parametrize(("bins", "point"), [(10, 0.75), (11, -2.0), (7, 3.0), (2048, 1.0)])
def test_rebin_single_point_range_moves_all_mass_to_its_bin(backend, bins, point):
    # A histogram over [c, c] holds its mass in one bin; torch.ao puts the total in c's new bin.
    histogram = torch.zeros(bins)
    histogram[bins // 2] = 41.0
    out = rebin(histogram, point, point, -2.0, 3.0)
    torch.testing.assert_close(out, torch_ao(histogram, point, point, -2.0, 3.0), atol=0, rtol=0)
    assert out.sum() == 41.0


def test_rebin_uninitialised_range_is_empty(backend):
    out = rebin(torch.zeros(16), float("inf"), float("-inf"), -1.0, 1.0)
    torch.testing.assert_close(out, torch.zeros(16), atol=0, rtol=0)


def test_rebin_opcheck(backend):
    histogram, *ranges = random_case(4, 40)
    scalars = tuple(torch.tensor(v, dtype=torch.float32) for v in ranges)
    torch.library.opcheck(torch.ops.tritonobs.histogram_rebin.default, (histogram, *scalars, 16))


def test_rebin_float64_histogram_keeps_its_dtype(backend):
    histogram, *ranges = random_case(5, 48, integer_counts=False)
    out = rebin(histogram.double(), *ranges)
    assert out.dtype == torch.float64
    if backend == "torch":
        torch.testing.assert_close(out, torch_ao(histogram.double(), *ranges), atol=0, rtol=0)
    else:
        # The kernels work in float32: the result is the float32 re-binning (the CUDA-linspace
        # model of torch.ao), stored as float64.
        expected = torch_ao_with_cuda_linspace(histogram, *ranges).double()
        torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("orig", "new"),
    [
        ((-1.0, 2.0), (-3.0, 2.5)),
        ((1000.0, 1000.001), (999.999, 1000.002)),  # steps below an ulp: repeated values
        ((-1e-30, 1e-30), (-1.0, 1.0)),  # every mid-point in the middle bins
    ],
)
def test_bucketize_right_is_torch_bucketize(orig, new):
    # The torch reference's bucketize of sorted linspace values, against torch.bucketize itself
    # (and an unsorted input, which takes torch.bucketize).
    bins, upsample_rate = 64, 16
    lo, hi = torch.tensor(orig[0]), torch.tensor(orig[1])
    mids = torch.linspace(lo, hi, bins * upsample_rate + 1)[:-1] + 0.5 * (hi - lo) / 1024
    edges = torch.linspace(*new, bins + 1)
    for values in (mids, mids.flip(0)):
        torch.testing.assert_close(
            bucketize_right(values, edges),
            torch.bucketize(values, edges, right=True),
            atol=0,
            rtol=0,
        )
