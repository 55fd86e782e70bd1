"""``tritonobs::histogram_update``: one HistogramObserver step, vs torch.ao and vs its own parts.

torch.ao is fed the finite values (it drops inf with a warning and breaks on NaN; this op skips
both). Everything a single step computes without re-binning is compared exactly; a step whose range
grew is, on the Triton backend, exactly ``histogram_rebin + histc`` over the new range (each checked
against torch.ao in its own test file) and within ``histogram_rebinned_mass`` of torch.ao.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver as AOHistogramObserver

import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.conftest import TOLERANCES
from tritonobs.kernels.histc import BLOCK, _histc_kernel, _histogram_stats_kernel, counting

pytestmark = pytest.mark.interpret

EXACT = {"atol": 0, "rtol": 0}
INF = float("inf")


def initial_state(bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(bins), torch.tensor(INF), torch.tensor(-INF)


def step(x, state, upsample_rate=16):
    return torch.ops.tritonobs.histogram_update(x, *state, upsample_rate)


def ao_step(observer: AOHistogramObserver, x: torch.Tensor) -> None:
    finite = x[torch.isfinite(x)]
    if finite.numel():
        observer(finite)


def assert_state_equal(state, observer: AOHistogramObserver) -> None:
    torch.testing.assert_close(state[0], observer.histogram, **EXACT)
    torch.testing.assert_close(state[1], observer.min_val, **EXACT)
    torch.testing.assert_close(state[2], observer.max_val, **EXACT)


def batch(seed: int, shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


@pytest.mark.parametrize("shape", [(1,), (7,), (5, 123), (3, 1, 17), (2, BLOCK + 3)])
@pytest.mark.parametrize("bins", [2048, 37, 1])
def test_first_batch_is_torch_ao_exactly(backend, shape, bins):
    x = batch(0, shape, scale=3.0)
    observer = AOHistogramObserver(bins=bins)
    observer(x)
    out = step(x, initial_state(bins))
    assert_state_equal(out[:3], observer)
    assert out[3].dtype == torch.int64 and out[3].item() == 0


@pytest.mark.parametrize("bins", [2048, 37, 5000])
def test_steady_state_adds_counts_exactly(backend, bins):
    # Batches inside the running range: no re-binning anywhere, so every number is exact.
    wide = batch(1, (3, 400), scale=4.0)
    observer = AOHistogramObserver(bins=bins)
    state = initial_state(bins)
    for x in (wide, batch(2, (5, 123)), batch(3, (2, BLOCK + 3)).clamp(-3, 3), wide[:, ::3]):
        observer(x)
        state = step(x, state)[:3]
        assert_state_equal(state, observer)


@pytest.mark.parametrize("bins", [2048, 37])
def test_growing_range_matches_rebin_plus_histc_and_torch_ao(backend, bins):
    observer = AOHistogramObserver(bins=bins)
    state = initial_state(bins)
    batches = [batch(4, (5, 123)), batch(5, (77,), scale=2.5), batch(6, (3, 1, 17), 6.0, 2.0)]
    for i, x in enumerate(batches):
        histogram, lo, hi = state
        state = step(x, state)[:3]
        observer(x)
        torch.testing.assert_close(state[1], observer.min_val, **EXACT)
        torch.testing.assert_close(state[2], observer.max_val, **EXACT)
        if i == 0 or backend == "torch":
            assert_state_equal(state, observer)
            continue
        parts = torch.ops.tritonobs.histogram_rebin(histogram, lo, hi, state[1], state[2], 16)
        counts = torch.ops.tritonobs.histc(x, state[1], state[2], bins)
        torch.testing.assert_close(state[0], parts + counts.float(), **EXACT)
        moved = (state[0] - observer.histogram).abs().sum() / observer.histogram.sum()
        assert moved <= TOLERANCES["histogram_rebinned_mass"]["rtol"]


def test_single_point_range_then_growth(backend):
    # First batch constant: range [c, c], histogram over [c - 1, c + 1]. Then the same value
    # again (no growth), then a wider batch (torch.ao's orig_min == orig_max branch).
    observer = AOHistogramObserver(bins=11)
    state = initial_state(11)
    for x in (torch.full((9,), 0.5), torch.full((4, 3), 0.5), batch(7, (40,))):
        observer(x)
        state = step(x, state)[:3]
        assert_state_equal(state, observer)


def test_nan_and_inf_are_skipped_and_counted(backend):
    x = batch(8, (300,), scale=2.0)
    x[::7] = float("nan")
    x[3::11] = INF
    x[5::13] = -INF
    observer = AOHistogramObserver(bins=64)
    state = initial_state(64)
    for data in (x, x.flip(0) * 1.5):
        ao_step(observer, data)
        *state, nonfinite = step(data, state)
        assert nonfinite.item() == (~torch.isfinite(data)).sum().item()
    assert_state_equal(state, observer)


@pytest.mark.parametrize("first", [True, False])
def test_batch_without_finite_values_changes_nothing(backend, first):
    state = initial_state(16) if first else step(batch(9, (50,)), initial_state(16))[:3]
    x = torch.tensor([float("nan"), INF, -INF, float("nan")])
    *out, nonfinite = step(x, state)
    for got, before in zip(out, state, strict=True):
        torch.testing.assert_close(got, before, **EXACT)
    assert nonfinite.item() == 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_binned_as_float32(backend, dtype):
    # Ours bins the float32 values: torch.ao fed x.float() is the reference for the histogram; the
    # range equals torch.ao's on the raw input (min/max are exact in any precision).
    observer, raw_observer = AOHistogramObserver(bins=256), AOHistogramObserver(bins=256)
    state = initial_state(256)
    for seed, scale in ((10, 1.0), (11, 0.5)):
        x = batch(seed, (7, 45), scale=scale).to(dtype)
        observer(x.float())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw_observer(x)
        state = step(x, state)[:3]
        assert_state_equal(state, observer)
        torch.testing.assert_close(state[1], raw_observer.min_val, **EXACT)
        torch.testing.assert_close(state[2], raw_observer.max_val, **EXACT)


def test_strided_input(backend):
    base = batch(12, (37, 29), scale=2.0)
    observer = AOHistogramObserver(bins=100)
    state = initial_state(100)
    for x in (base.t(), base[::2, 3:], base[:1].expand(4, 29)):
        observer(x)
        state = step(x, state)[:3]
        assert_state_equal(state, observer)


def test_returns_new_tensors(backend):
    state = step(batch(13, (20,)), initial_state(8))[:3]
    out = step(batch(13, (20,)), state)
    for got, before in zip(out[:3], state, strict=True):
        assert got.data_ptr() != before.data_ptr()


def test_histogram_update_opcheck(backend):
    state = step(batch(14, (40,)), initial_state(24))[:3]
    for x in (batch(15, (3, 11), scale=0.5), batch(16, (3, 11), scale=3.0)):
        torch.library.opcheck(torch.ops.tritonobs.histogram_update.default, (x, *state, 16))


def test_float64_inputs_round_to_float32_and_overflow_counts_as_inf(backend):
    x = batch(17, (5, 41), scale=3.0).double()
    x[0, :3] = torch.tensor([1e300, -1e300, 1e-300])
    kept = x.float()
    observer = AOHistogramObserver(bins=50)
    observer(kept[torch.isfinite(kept)])
    *state, nonfinite = step(x, initial_state(50))
    assert_state_equal(state, observer)
    assert nonfinite.item() == 2


@pytest.mark.parametrize("grows", [False, True])
def test_repass_kernel_exits_unless_the_range_grew(grows):
    # The steady state reads the input once: the re-pass kernel decides on the device to skip.
    x = batch(18, (3, 50), scale=4.0 if grows else 1.0)
    min_val, max_val = torch.tensor(-5.0), torch.tensor(5.0)
    partials = torch.empty(2, 1)
    part_nonfinite = torch.empty(1, dtype=torch.int64)
    counts_a = torch.zeros(8, dtype=torch.int64)
    counts_b = torch.full((8,), -7, dtype=torch.int64)
    new_range = torch.empty(2)
    args = (x.reshape(-1), x.numel(), min_val, max_val, partials[0], partials[1])
    _histogram_stats_kernel[(1,)](
        *args, part_nonfinite, counts_a, 1, COUNT=True, BLOCK=BLOCK, **counting(8)
    )
    _histc_kernel[(1,)](
        *args, 1, counts_b, new_range, 1, UPDATE=True, PARTS_P2=16, BLOCK=BLOCK, **counting(8)
    )
    lo, hi = min(-5.0, x.min().item()), max(5.0, x.max().item())
    assert new_range.tolist() == [lo, hi]
    assert ((lo, hi) != (-5.0, 5.0)) == grows
    if grows:
        expected = torch.histc(x, 8, min=lo, max=hi).to(torch.int64) - 7
        torch.testing.assert_close(counts_b, expected, **EXACT)
    else:
        assert counts_b.tolist() == [-7] * 8
        expected = torch.histc(x, 8, min=-5.0, max=5.0).to(torch.int64)
        torch.testing.assert_close(counts_a, expected, **EXACT)
