"""``tritonobs::histogram_update``: one HistogramObserver step, in place, vs torch.ao and its parts.

The op writes ``histogram``, ``min_val`` and ``max_val`` in place and adds the NaN/inf count to
``nonfinite_count``. torch.ao is fed the finite values (it drops inf with a warning and breaks on
NaN; this op skips both). Everything a single step computes without re-binning is compared exactly;
a step whose range grew is, on the Triton backend, exactly ``histogram_rebin + histc`` over the new
range (each checked against torch.ao in its own test file) and within ``histogram_rebinned_mass``
of torch.ao.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver as AOHistogramObserver

import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.conftest import TOLERANCES
from tritonobs.kernels.histc import BLOCK, _histogram_stats_kernel, counting
from tritonobs.kernels.histogram_rebin import scatter_constexprs
from tritonobs.kernels.histogram_update import _histogram_regrow_kernel
from tritonobs.ops.histogram_update import histogram_update_torch

pytestmark = pytest.mark.interpret

EXACT = {"atol": 0, "rtol": 0}
INF = float("inf")


def initial_state(bins: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``[histogram, min_val, max_val, nonfinite_count]`` of a fresh observer."""
    return [
        torch.zeros(bins, dtype=dtype),
        torch.tensor(INF, dtype=dtype),
        torch.tensor(-INF, dtype=dtype),
        torch.zeros((), dtype=torch.int64),
    ]


def step(x: torch.Tensor, state: list[torch.Tensor], upsample_rate: int = 16) -> list[torch.Tensor]:
    """One in-place op call on ``state``; returns ``state`` (the same tensors)."""
    assert torch.ops.tritonobs.histogram_update(x, *state, upsample_rate) is None
    return state


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
    state = step(x, initial_state(bins))
    assert_state_equal(state, observer)
    assert state[3].dtype == torch.int64 and state[3].item() == 0


@pytest.mark.parametrize("bins", [2048, 37, 5000])
def test_steady_state_adds_counts_exactly(backend, bins):
    # Batches inside the running range: no re-binning anywhere, so every number is exact.
    wide = batch(1, (3, 400), scale=4.0)
    observer = AOHistogramObserver(bins=bins)
    state = initial_state(bins)
    for x in (wide, batch(2, (5, 123)), batch(3, (2, BLOCK + 3)).clamp(-3, 3), wide[:, ::3]):
        observer(x)
        step(x, state)
        assert_state_equal(state, observer)


@pytest.mark.parametrize("bins", [2048, 37])
def test_growing_range_matches_rebin_plus_histc_and_torch_ao(backend, bins):
    observer = AOHistogramObserver(bins=bins)
    state = initial_state(bins)
    batches = [batch(4, (5, 123)), batch(5, (77,), scale=2.5), batch(6, (3, 1, 17), 6.0, 2.0)]
    for i, x in enumerate(batches):
        histogram, lo, hi = (v.clone() for v in state[:3])
        step(x, state)
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
        step(x, state)
        assert_state_equal(state, observer)


def test_nan_and_inf_are_skipped_and_counted(backend):
    x = batch(8, (300,), scale=2.0)
    x[::7] = float("nan")
    x[3::11] = INF
    x[5::13] = -INF
    observer = AOHistogramObserver(bins=64)
    state = initial_state(64)
    skipped = 0
    for data in (x, x.flip(0) * 1.5):
        ao_step(observer, data)
        step(data, state)
        skipped += (~torch.isfinite(data)).sum().item()
        # The op adds the batch's count to the running one.
        assert state[3].item() == skipped
    assert_state_equal(state, observer)


@pytest.mark.parametrize("first", [True, False])
def test_batch_without_finite_values_changes_nothing(backend, first):
    state = initial_state(16) if first else step(batch(9, (50,)), initial_state(16))
    before = [v.clone() for v in state]
    step(torch.tensor([float("nan"), INF, -INF, float("nan")]), state)
    for got, expected in zip(state[:3], before[:3], strict=True):
        torch.testing.assert_close(got, expected, **EXACT)
    assert state[3].item() == 4


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
        step(x, state)
        assert_state_equal(state, observer)
        torch.testing.assert_close(state[1], raw_observer.min_val, **EXACT)
        torch.testing.assert_close(state[2], raw_observer.max_val, **EXACT)


def test_strided_input(backend):
    base = batch(12, (37, 29), scale=2.0)
    observer = AOHistogramObserver(bins=100)
    state = initial_state(100)
    for x in (base.t(), base[::2, 3:], base[:1].expand(4, 29)):
        observer(x)
        step(x, state)
        assert_state_equal(state, observer)


def test_updates_the_buffers_in_place(backend):
    state = step(batch(13, (20,)), initial_state(8))
    pointers = [v.data_ptr() for v in state]
    for x in (batch(14, (20,)), batch(15, (3, 7), scale=5.0)):
        step(x, state)
    assert [v.data_ptr() for v in state] == pointers


def test_torch_reference_writes_the_same_buffers(backend):
    # The op (Triton on this backend) and its torch reference, each on its own copy of the state,
    # agree exactly while the range does not move (and on the range always).
    ours, reference = initial_state(40), initial_state(40)
    for x in (batch(16, (5, 31), scale=2.0), batch(17, (77,)), batch(18, (9,), scale=3.0)):
        step(x, ours)
        histogram_update_torch(x, *reference, 16)
        for got, expected in zip(ours[1:], reference[1:], strict=True):
            torch.testing.assert_close(got, expected, **EXACT)
    torch.testing.assert_close(ours[0], reference[0], **TOLERANCES["histogram_rebinned"])


@pytest.mark.parametrize("grows", [False, True])
def test_histogram_update_opcheck(backend, grows):
    # opcheck checks the schema's (a!) annotations against what the kernel really writes.
    state = step(batch(19, (40,)), initial_state(24))
    x = batch(20, (3, 11), scale=3.0 if grows else 0.5)
    x[0, 0] = float("nan")
    torch.library.opcheck(torch.ops.tritonobs.histogram_update.default, (x, *state, 16))


def test_float64_inputs_round_to_float32_and_overflow_counts_as_inf(backend):
    x = batch(17, (5, 41), scale=3.0).double()
    x[0, :3] = torch.tensor([1e300, -1e300, 1e-300])
    kept = x.float()
    observer = AOHistogramObserver(bins=50)
    observer(kept[torch.isfinite(kept)])
    state = step(x, initial_state(50))
    assert_state_equal(state, observer)
    assert state[3].item() == 2


@pytest.mark.parametrize("case", ["steady", "grows", "first", "no_finite"])
def test_regrow_kernel_exits_unless_the_range_grew(case):
    # The steady state reads the input once: the regrow launch decides on the device to skip,
    # records the decision for the combine, and writes nothing else.
    x = {
        "steady": batch(21, (3, 50)),
        "grows": batch(21, (3, 50), scale=4.0),
        "first": batch(21, (3, 50)),
        "no_finite": torch.tensor([float("nan"), INF]),
    }[case]
    bins, rows = 8, 2
    initialised = case != "first"
    min_val = torch.tensor(-5.0 if initialised else INF)
    max_val = torch.tensor(5.0 if initialised else -INF)
    histogram = torch.arange(1.0, bins + 1)
    partials = torch.empty(2, 1)
    part_nonfinite = torch.empty(1, dtype=torch.int64)
    nonfinite = torch.tensor(3)
    counts_a = torch.zeros(bins, dtype=torch.int64)
    # Poisoned: the launch adds to them only when it has work.
    counts_b = torch.full((bins,), -7, dtype=torch.int64)
    rebinned = torch.full((bins,), -7.0, dtype=torch.float64)
    decision = torch.full((3,), 99.0)
    count = counting(bins)
    _histogram_stats_kernel[(1,)](
        x.reshape(-1), x.numel(), min_val, max_val, partials[0], partials[1], part_nonfinite,
        counts_a, 1, COUNT=True, BLOCK=BLOCK, **count,
    )  # fmt: skip
    _histogram_regrow_kernel[(1 + rows,)](
        x.reshape(-1), x.numel(), min_val, max_val, partials[0], partials[1], part_nonfinite, 1,
        nonfinite, histogram, counts_b, rebinned, decision, 1, PARTS_P2=16, BLOCK=BLOCK,
        **{**count, **scatter_constexprs(bins, 16), "BLOCK_BINS": 4},
    )  # fmt: skip
    finite = x[torch.isfinite(x)]
    # Program 0 adds the batch's NaN/inf count to the running one.
    assert nonfinite.item() == 3 + x.numel() - finite.numel()
    if case == "no_finite":
        assert decision.tolist() == [-5.0, 5.0, 0.0]
        assert counts_b.tolist() == [-7] * bins and rebinned.tolist() == [-7.0] * bins
        return
    lo, hi = finite.min().item(), finite.max().item()
    if initialised:
        lo, hi = min(-5.0, lo), max(5.0, hi)
    grew = (lo, hi) != (-5.0, 5.0)
    assert decision.tolist() == [lo, hi, 2.0 if grew else 1.0]
    if grew:
        expected = torch.histc(x, bins, min=lo, max=hi).to(torch.int64) - 7
        torch.testing.assert_close(counts_b, expected, **EXACT)
        # The old histogram's mass moved into the re-binned sums (none on the first batch).
        moved = histogram.sum().item() if initialised else 0.0
        assert rebinned.sum().item() == pytest.approx(moved - 7.0 * bins)
    else:
        assert counts_b.tolist() == [-7] * bins and rebinned.tolist() == [-7.0] * bins
        expected = torch.histc(x, bins, min=-5.0, max=5.0).to(torch.int64)
        torch.testing.assert_close(counts_a, expected, **EXACT)


def test_float64_buffers_are_updated_in_place(backend):
    # The torch reference runs torch.ao's ops on float64 buffers; the Triton path round-trips
    # them through float32 (the float32 state, stored as float64), writing the same tensors.
    state = initial_state(30, torch.float64)
    pointers = [v.data_ptr() for v in state]
    observer = AOHistogramObserver(bins=30, factory_kwargs={"dtype": torch.float64})
    single = initial_state(30)
    for x in (batch(22, (4, 19)), batch(23, (50,), scale=3.0)):
        step(x, state)
        step(x, single)
        observer(x)
    assert [v.data_ptr() for v in state] == pointers
    assert all(v.dtype == torch.float64 for v in state[:3])
    if backend == "torch":
        assert_state_equal(state, observer)
    else:
        for got, expected in zip(state, single, strict=True):
            torch.testing.assert_close(got, expected.to(got.dtype), **EXACT)
