"""The binning kernels put every value on and next to every bin edge where ``torch.histc`` does.

``kernels/histc.py`` bins without a division per value (a reciprocal multiply and one exact
comparison, derived in ``_bin``'s docstring). For each range below, the values are the float32
(or bfloat16) numbers around every edge as the torch reference places it: the first value of each
bin (found by bisection, checked to be the first: the value below it is in an earlier bin) and
``ULPS`` neighbours either side. Each value's bin from the kernels'
``_bin`` (run by a small kernel here) must equal the torch reference's
``trunc((v - lo) * bins / (hi - lo))`` in float32 (bin 0 where ``(v - lo) * bins`` overflows, the
last bin at ``hi``), which in turn must count as ``torch.histc`` does; then ``tritonobs::histc``
over the same values must count as ``torch.histc`` (both counting paths).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import tritonobs.ops  # noqa: F401  (registers the ops)
from tritonobs.backend import use_backend
from tritonobs.kernels.histc import (
    LOCAL_HIST_MAX_BINS,
    RECIPROCAL_MAX_BINS,
    _bin,
    _reciprocal,
    _widen_degenerate,
)

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

ULPS = 6

# (lo, hi, bins): power-of-two and other bin counts; a range of a few ulps; subnormal and tiny
# ranges; huge ranges where (v - lo) * bins overflows. (Where hi - lo itself overflows, torch.histc
# counts nothing and the torch reference puts every value in bin 0, as the kernels do.)
RANGES = [
    (-3.0, 5.0, 16),
    (-3.0, 5.0, 13),
    (-1.7, 2.3, 2047),
    (0.0, 1.0, 2048),
    (-0.1, 0.7, 1000),
    (1.0, float(np.nextafter(np.float32(1.0), np.float32(2.0)) + 4 * 2.0**-23), 3),
    (1000.0, 1000.0 + 7 * 2.0**-14, 5),
    (0.0, 1e-40, 10),
    (-1e-38, 1e-38, 999),
    (-3e-35, 5e-36, 77),
    (-1e36, 1e36, 2000),
    (-1e38, 2e38, 4096),
    (1e30, 1.0000001e30, 9),
    (-7.5, -7.25, 2**20),
]
# bfloat16 inputs: the ranges that hold several bfloat16 values, away from subnormal ones (the
# interpreter converts subnormal bfloat16 values to float32 wrongly; the GPU's conversion is exact).
BF16_RANGES = [
    r for r in RANGES if r[1] - r[0] > 2**-6 * max(abs(r[0]), abs(r[1])) and abs(r[0]) > 1e-30
]


@triton.jit
def _bins_kernel(x_ptr, lo_ptr, hi_ptr, out_ptr, n, NBINS: tl.constexpr, BLOCK: tl.constexpr):
    """``out[i]`` = the binning kernels' bin of ``x[i]`` over ``[lo, hi]``, -1 outside it."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offs < n
    v = tl.load(x_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    lo, hi, width, middle = _widen_degenerate(tl.load(lo_ptr), tl.load(hi_ptr))
    scale, ws, inv = _reciprocal(width)
    counted = in_bounds & (v >= lo) & (v <= hi)
    b = _bin(v, counted, lo, scale, ws, inv, middle, NBINS)
    tl.store(out_ptr + offs, tl.where(counted, b, -1), mask=in_bounds)


def kernel_bins(x: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    out = torch.empty(x.numel(), dtype=torch.int32)
    block = 4096
    _bins_kernel[(triton.cdiv(x.numel(), block),)](
        x, torch.tensor(lo), torch.tensor(hi), out, x.numel(), NBINS=bins, BLOCK=block
    )
    return out.long()


def quotient(v: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """torch.histc's ``(v - lo) * bins / (hi - lo)`` in float32 (monotone in ``v``, ``inf`` where
    ``(v - lo) * bins`` overflows)."""
    return (v - torch.tensor(lo)) * bins / (torch.tensor(hi) - torch.tensor(lo))


def reference_bins(v: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """torch.histc's bin of each float32 value in ``[lo, hi]``: bin 0 on overflow, the last at hi."""
    t = quotient(v, lo, hi, bins)
    return torch.where(t.isfinite(), t, 0.0).to(torch.int64).clamp(max=bins - 1)


def _keys(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integers in the order of the ``dtype`` values ``v`` (consecutive for neighbours)."""
    sign = 0x7FFF if dtype == torch.bfloat16 else 0x7FFFFFFF
    bits = v.to(dtype).view(torch.int16 if dtype == torch.bfloat16 else torch.int32).long()
    return torch.where(bits < 0, -(bits & sign), bits)


def _values(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.bfloat16:
        bits = torch.where(keys < 0, -keys | 0x8000, keys).to(torch.int16)
        return bits.view(torch.bfloat16)
    return torch.where(keys < 0, -keys | 0x80000000, keys).to(torch.int32).view(torch.float32)


def values_near_edges(lo: float, hi: float, bins: int, dtype: torch.dtype) -> torch.Tensor:
    """The ``dtype`` values within ``ULPS`` steps of the first value of every bin as the torch
    reference places it (found by bisection over the ordered values of ``[lo, hi]``; where
    ``(v - lo) * bins`` overflows, the first overflowing value), and of ``lo`` and ``hi`` (all bins
    up to 4096, 4096 random ones beyond)."""
    k = torch.arange(1, bins)
    if bins > 4096:
        k = k[torch.randperm(bins - 1, generator=torch.Generator().manual_seed(bins))[:4096]]
    first, last = _keys(torch.tensor([lo, hi]).to(dtype).float(), dtype).tolist()
    first += int(_values(torch.tensor(first), dtype).float() < lo)
    last -= int(_values(torch.tensor(last), dtype).float() > hi)
    low = torch.full_like(k, first)
    high = torch.full_like(k, last + 1)
    while bool((low < high).any()):
        mid = (low + high) // 2
        reached = quotient(_values(mid, dtype).float(), lo, hi, bins) >= k
        high = torch.where(reached, mid, high)
        low = torch.where(reached, low, mid + 1)
    # The first value of each bin inside the range, and the value below it in the bin before.
    inside = low > first
    assert (quotient(_values(low[inside], dtype).float(), lo, hi, bins) >= k[inside]).all()
    assert (quotient(_values(low[inside] - 1, dtype).float(), lo, hi, bins) < k[inside]).all()
    centres = torch.cat([low, torch.tensor([first, last])])
    near = (centres[:, None] + torch.arange(-ULPS, ULPS + 1)[None, :]).clamp(first, last)
    return _values(near.reshape(-1).unique(), dtype)


@pytest.mark.parametrize(
    ("lo", "hi", "bins", "dtype"),
    [(*r, torch.float32) for r in RANGES] + [(*r, torch.bfloat16) for r in BF16_RANGES],
)
def test_every_value_near_every_edge_lands_in_torch_histc_bin(lo, hi, bins, dtype):
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    x = values_near_edges(lo, hi, bins, dtype)
    v = x.float()
    expected = reference_bins(v, lo, hi, bins)
    torch.testing.assert_close(
        torch.bincount(expected, minlength=bins),
        torch.histc(v, bins, min=lo, max=hi).long(),
        atol=0,
        rtol=0,
    )
    torch.testing.assert_close(kernel_bins(x, lo, hi, bins), expected, atol=0, rtol=0)


def test_reciprocal_path_ends_at_its_bound():
    # 2^20 bins is the last count the reciprocal serves (the test above); one more divides.
    assert RECIPROCAL_MAX_BINS.value == 2**20
    lo, hi, bins = -7.5, -7.25, 2**20 + 3
    x = values_near_edges(lo, hi, bins, torch.float32)
    expected = reference_bins(x, lo, hi, bins)
    torch.testing.assert_close(kernel_bins(x, lo, hi, bins), expected, atol=0, rtol=0)


@pytest.mark.parametrize("bins", [13, 2048, LOCAL_HIST_MAX_BINS + 5])
@pytest.mark.parametrize(("lo", "hi"), [(-3.0, 5.0), (-1e36, 1e36), (-3e-35, 5e-36)])
def test_histc_counts_values_near_every_edge_as_torch_histc(lo, hi, bins):
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    x = values_near_edges(lo, hi, bins, torch.float32)
    with use_backend("triton"):
        out = torch.ops.tritonobs.histc(x, torch.tensor(lo), torch.tensor(hi), bins)
    expected = torch.histc(x, bins, min=lo, max=hi).long()
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
