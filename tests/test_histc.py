"""``tritonobs::histc`` vs ``torch.histc``: same bin for every finite value, integer counts."""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
import tritonobs.ops.histc as histc_ops
from tests.conftest import SHAPES
from tritonobs.backend import use_backend
from tritonobs.kernels import _launch
from tritonobs.kernels.histc import (
    BLOCK,
    LOCAL_HIST_MAX_BINS,
    _histogram_stats_kernel,
    stats_config,
    stream_grid,
)

pytestmark = pytest.mark.interpret

# A size spanning several programs (tiles of BLOCK) with a ragged last tile.
MULTI_PROGRAM = (3, BLOCK + 5)


def histc(x: torch.Tensor, lo: float | torch.Tensor, hi: float | torch.Tensor, bins: int):
    return torch.ops.tritonobs.histc(
        x, torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32), bins
    )


def expected(x: torch.Tensor, lo: float | torch.Tensor, hi: float | torch.Tensor, bins: int):
    """torch.histc of the float32 values, as int64."""
    return torch.histc(x.float(), bins, min=float(lo), max=float(hi)).to(torch.int64)


@pytest.mark.parametrize("shape", [*SHAPES, MULTI_PROGRAM])
@pytest.mark.parametrize("bins", [1, 7, 2048])
def test_histc_full_range(backend, shape, bins):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(bins))
    lo, hi = torch.aminmax(x)
    torch.testing.assert_close(histc(x, lo, hi, bins), expected(x, lo, hi, bins), atol=0, rtol=0)


@pytest.mark.parametrize("bins", [3, 100, LOCAL_HIST_MAX_BINS + 7])
def test_histc_values_outside_range_are_not_counted(backend, bins):
    x = torch.randn(5, 123, generator=torch.Generator().manual_seed(1)) * 3
    out = histc(x, -1.25, 2.0, bins)
    torch.testing.assert_close(out, expected(x, -1.25, 2.0, bins), atol=0, rtol=0)
    assert out.sum() == ((x >= -1.25) & (x <= 2.0)).sum()


def test_histc_edges_and_bin_boundaries(backend):
    # Values exactly on bin edges, at lo and at hi (the top edge belongs to the last bin), and the
    # float32 neighbours of the edges.
    edges = torch.linspace(-3.0, 5.0, 17)
    x = torch.cat(
        [edges, edges.nextafter(torch.tensor(-10.0)), edges.nextafter(torch.tensor(10.0))]
    )
    torch.testing.assert_close(histc(x, -3.0, 5.0, 16), expected(x, -3.0, 5.0, 16), atol=0, rtol=0)
    torch.testing.assert_close(histc(x, -3.0, 5.0, 13), expected(x, -3.0, 5.0, 13), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_histc_bins_float32_values_of_other_dtypes(backend, dtype):
    x = (torch.randn(7, 33, generator=torch.Generator().manual_seed(2)) * 4).to(dtype)
    out = histc(x, -5.0, 5.0, 64)
    torch.testing.assert_close(out, expected(x.float(), -5.0, 5.0, 64), atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_histc_strided_inputs(backend, layout):
    base = torch.randn(37, 29, generator=torch.Generator().manual_seed(3))
    x = {
        "transposed": base.t(),
        "sliced": base[::2, 3:],
        "expanded": base[:1].expand(5, 29),
    }[layout]
    torch.testing.assert_close(histc(x, -2.0, 2.5, 50), expected(x, -2.0, 2.5, 50), atol=0, rtol=0)


def test_histc_skips_nan_and_inf(backend):
    x = torch.randn(300, generator=torch.Generator().manual_seed(4))
    x[::7] = float("nan")
    x[3::11] = float("inf")
    x[5::13] = float("-inf")
    finite = x[torch.isfinite(x)]
    lo, hi = torch.aminmax(finite)
    torch.testing.assert_close(histc(x, lo, hi, 31), expected(finite, lo, hi, 31), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("values", "point"),
    [
        ([2.5] * 9, 2.5),  # one value: [c - 1, c + 1], all in the middle bin
        ([0.5, -1.0, 3.0, 2.0], 7.0),  # lo == hi: the range becomes the min/max of x
        ([1e30, 1e30], 1e30),  # c - 1 == c in float32: the middle bin
        ([-3e7], -3e7),
    ],
)
@pytest.mark.parametrize("bins", [10, 11])
def test_histc_degenerate_range_follows_torch_histc(backend, values, point, bins):
    x = torch.tensor(values)
    torch.testing.assert_close(
        histc(x, point, point, bins), expected(x, point, point, bins), atol=0, rtol=0
    )


def test_histc_degenerate_range_skips_nonfinite_when_taking_min_max(backend):
    x = torch.tensor([1.0, float("nan"), 4.0, float("-inf"), 2.0])
    finite = x[torch.isfinite(x)]
    torch.testing.assert_close(histc(x, 3.0, 3.0, 6), expected(finite, 3.0, 3.0, 6), atol=0, rtol=0)


def test_histc_counts_are_int64(backend):
    x = torch.full((3 * BLOCK + 1,), 0.25)
    out = histc(x, 0.0, 1.0, 4)
    assert out.dtype == torch.int64
    assert out.tolist() == [0, 3 * BLOCK + 1, 0, 0]


def test_histc_counts_past_float32_integers():
    # torch.histc's float32 counters stop at 2^24; int64 ones do not (torch backend: the
    # interpreter would take minutes over 2^24 values).
    x = torch.zeros(2**24 + 3)
    with use_backend("torch"):
        out = histc(x, -1.0, 1.0, 2)
    assert out.tolist() == [0, 2**24 + 3]


def test_histc_opcheck(backend):
    x = torch.randn(5, 17, generator=torch.Generator().manual_seed(5))
    torch.library.opcheck(
        torch.ops.tritonobs.histc.default, (x, torch.tensor(-1.0), torch.tensor(1.5), 9)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bins", [2048, 37])
def test_torch_reference_chunks_match_torch_histc(monkeypatch, dtype, bins):
    # Chunk boundaries at odd offsets; 2048 bins take the one-division path, 37 the
    # multiply-then-divide one. Both are torch.histc's bins exactly.
    monkeypatch.setattr(histc_ops, "CHUNK", 7)
    x = (torch.randn(3, 41, generator=torch.Generator().manual_seed(6)) * 3).to(dtype)
    lo, hi = (v.item() for v in torch.aminmax(x.float()))
    out = histc_ops.count_in_range(x, lo, hi, bins)
    torch.testing.assert_close(out, expected(x.float(), lo, hi, bins), atol=0, rtol=0)


@pytest.mark.parametrize("bins", [2048, 2000])
def test_torch_reference_overflowing_bin_arithmetic_follows_torch_histc(bins):
    # (v - lo) * bins overflows float32 (the range itself does not): torch.histc puts such values
    # in bin 0, and so does the torch reference. (Not supported on the Triton path.)
    x = torch.tensor([1e36, -1e36, 0.0, 5e35])
    with use_backend("torch"):
        out = histc(x, -1e36, 1e36, bins)
    torch.testing.assert_close(out, expected(x, -1e36, 1e36, bins), atol=0, rtol=0)


def test_histc_copies_only_inputs_with_gaps():
    """Contiguous and transposed (dense) inputs are read in place; a slice is copied once, and
    counted."""
    base = torch.randn(37, 29, generator=torch.Generator().manual_seed(3))
    copies = _launch.COPIES["flat_view"]
    with use_backend("triton"):
        for x in (base, base.t(), base[None].permute(2, 0, 1)):
            histc(x, -2.0, 2.5, 50)
        assert _launch.COPIES["flat_view"] == copies
        torch.testing.assert_close(
            histc(base[::2], -2.0, 2.5, 50), expected(base[::2], -2.0, 2.5, 50), atol=0, rtol=0
        )
    assert _launch.COPIES["flat_view"] == copies + 1


# 16 programs of 6 tiles under the interpreter: a group of GROUP_TILES tiles loaded unmasked, two
# full tiles loaded masked at a tile boundary, and (last program) the ragged tile of 5 values.
GROUPED = 95 * BLOCK + 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_histc_counts_grouped_and_ragged_tiles_once(dtype):
    x = (torch.randn(GROUPED, generator=torch.Generator().manual_seed(7)) * 3).to(dtype)
    x[::1001] = float("nan")
    finite = x[torch.isfinite(x)].float()
    lo, hi = torch.aminmax(finite)
    with use_backend("triton"):
        out = histc(x, lo, hi, 2048)
        point = histc(x, 0.5, 0.5, 100)
    torch.testing.assert_close(out, expected(finite, lo, hi, 2048), atol=0, rtol=0)
    torch.testing.assert_close(point, expected(finite, lo, hi, 100), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_stats_pass_counts_grouped_and_ragged_tiles_once(dtype):
    x = (torch.randn(GROUPED, generator=torch.Generator().manual_seed(8)) * 3).to(dtype)
    x[3::997] = float("inf")
    x[::1013] = float("nan")
    finite = x[torch.isfinite(x)].float()
    programs, tiles = stream_grid(x.numel(), x.device)
    part_min, part_max = torch.empty(programs), torch.empty(programs)
    part_nonfinite = torch.empty(programs, dtype=torch.int64)
    counts = torch.zeros(300, dtype=torch.int64)
    lo, hi = torch.tensor(-2.0), torch.tensor(2.5)
    _histogram_stats_kernel[(programs,)](
        x, x.numel(), lo, hi, part_min, part_max, part_nonfinite, counts, tiles,
        **stats_config(300, True, x.element_size()).kwargs,
    )  # fmt: skip
    assert (programs, tiles) == (16, 6)
    assert (part_min.min(), part_max.max()) == torch.aminmax(finite)
    assert part_nonfinite.sum() == x.numel() - finite.numel()
    torch.testing.assert_close(counts, expected(finite, lo, hi, 300), atol=0, rtol=0)
