"""``tritonobs::aminmax_per_channel``: the Triton kernel (interpreter) against its torch reference,
against plain ``amin``/``amax`` on the finite values and against torch.ao's per-channel observers,
all exact, on every axis (negative ones too) and on views that are not contiguous.
"""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the tritonobs::* ops)
from tests.conftest import INPUT_DTYPES, SHAPES
from tests.test_aminmax import INF, NAN, assert_exact, data, run, with_nonfinite
from tritonobs.backend import use_backend
from tritonobs.kernels import aminmax as kernel
from tritonobs.kernels.aminmax_per_channel import aminmax_per_channel_triton
from tritonobs.ops.aminmax_per_channel import aminmax_per_channel_torch

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def unset(x, ch_axis):
    """The state of channels that have seen nothing yet: (+inf, -inf) each."""
    lo = torch.full((x.shape[ch_axis],), INF)
    return lo, -lo


def plain(x, ch_axis, running_min, running_max, c):
    """Plain amin/amax per channel over the finite values; the update as torch.ao writes it."""
    x32 = torch.movedim(x.to(torch.float32), ch_axis, 0).reshape(x.shape[ch_axis], -1)
    finite = torch.isfinite(x32)
    batch_min = torch.where(finite, x32, INF).amin(dim=1)
    batch_max = torch.where(finite, x32, -INF).amax(dim=1)
    if c is None:
        new_min, new_max = (
            torch.minimum(batch_min, running_min),
            torch.maximum(batch_max, running_max),
        )
    else:
        fresh = (running_min == INF) & (running_max == -INF)
        new_min = torch.where(fresh, batch_min, running_min + c * (batch_min - running_min))
        new_max = torch.where(fresh, batch_max, running_max + c * (batch_max - running_max))
    seen = finite.any(dim=1)
    new_min, new_max = (
        torch.where(seen, new_min, running_min),
        torch.where(seen, new_max, running_max),
    )
    return new_min, new_max, (~finite).sum()


def check(x, ch_axis, running_min, running_max, c) -> None:
    """The op (whatever backend is on) equals the reference and plain torch."""
    result = run(torch.ops.tritonobs.aminmax_per_channel, x, ch_axis, running_min, running_max, c)
    reference = run(aminmax_per_channel_torch, x, ch_axis, running_min, running_max, c)
    assert_exact(result, reference)
    assert_exact(result, plain(x, ch_axis, running_min, running_max, c))


def running_for(x, ch_axis, seed=7):
    """An initialised running state for ``x``'s channels, a few of them still at (+inf, -inf)."""
    channels = x.shape[ch_axis]
    lo = torch.randn(channels, generator=torch.Generator().manual_seed(seed)) - 1
    hi = lo + 2
    lo[::3], hi[::3] = INF, -INF
    return lo, hi


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis(backend, shape, dtype):
    x = data(shape, dtype)
    for ch_axis in range(-x.dim(), x.dim()):
        check(x, ch_axis, *unset(x, ch_axis), None)
        check(x, ch_axis, *running_for(x, ch_axis), 0.01)


LAYOUTS = {
    "transposed": lambda: data((33, 64)).t(),
    "step_sliced": lambda: data((40, 50))[::3, 1::2],
    "permuted_4d": lambda: data((2, 3, 5, 7)).permute(2, 0, 3, 1),
    "channels_last": lambda: data((2, 6, 5, 7)).to(memory_format=torch.channels_last),
    "expanded": lambda: data((5, 1, 7)).expand(5, 4, 7),
    "sliced_4d": lambda: data((4, 6, 10, 9))[1:, ::2, 3:, ::4],
    "five_strided_axes": lambda: data((5, 6, 5, 6, 5))[::2, ::2, ::2, ::2, ::2],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous(backend, layout, dtype):
    x = LAYOUTS[layout]().to(dtype)
    for ch_axis in (0, -1, 1):
        check(x, ch_axis, *unset(x, ch_axis), None)
        check(x, ch_axis, *running_for(x, ch_axis), 0.5)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
def test_nonfinite_values_are_skipped_and_counted(backend, dtype):
    x = with_nonfinite(data((37, 6, 29), dtype))
    x[:, 2] = NAN  # a channel with no finite value keeps its running value
    x[:, 4, ::2] = INF
    for ch_axis in (1, -1, 0):
        check(x, ch_axis, *unset(x, ch_axis), None)
        check(x, ch_axis, *running_for(x, ch_axis), 0.1)


@pytest.mark.parametrize("c", [None, 0.1])
def test_batch_without_finite_values_keeps_running(backend, c):
    x = with_nonfinite(torch.full((4, 5, 3), NAN))
    for ch_axis in (0, 1, -1):
        running = running_for(x, ch_axis)
        op = torch.ops.tritonobs.aminmax_per_channel
        assert_exact(run(op, x, ch_axis, *running, c), (*running, torch.tensor(x.numel())))
        assert_exact(
            run(op, x, ch_axis, *unset(x, ch_axis), c),
            (*unset(x, ch_axis), torch.tensor(x.numel())),
        )


def test_moving_average_matches_torch_ao_bit_for_bit():
    """Several batches through the op and through torch.ao's per-channel observers."""
    for ch_axis in (0, 1):
        moving = torch.ao.quantization.MovingAveragePerChannelMinMaxObserver(
            averaging_constant=0.3, ch_axis=ch_axis
        )
        minmax = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=ch_axis)
        ema = running = unset(data((96, 130)), ch_axis)
        with use_backend("triton"):
            for seed in range(3):
                x = data((96, 130), torch.bfloat16, seed=seed) * (seed + 1)
                moving(x)
                minmax(x)
                op = torch.ops.tritonobs.aminmax_per_channel
                ema = run(op, x, ch_axis, *ema, 0.3)[:2]
                running = run(op, x, ch_axis, *running, None)[:2]
        for ours, observer in ((ema, moving), (running, minmax)):
            torch.testing.assert_close(ours[0], observer.min_val, atol=0, rtol=0)
            torch.testing.assert_close(ours[1], observer.max_val, atol=0, rtol=0)


def test_large_input_several_programs(backend):
    x = with_nonfinite(data((256, 1024), torch.bfloat16))
    for ch_axis in (0, 1):
        check(x, ch_axis, *running_for(x, ch_axis), 0.25)


@pytest.fixture
def small_tiles(monkeypatch):
    """64-element tiles: many tiles, edge tiles and several programs per channel block."""
    monkeypatch.setattr(kernel, "TILE", 64)
    monkeypatch.setattr(kernel, "MIN_CONTIGUOUS", 8)
    monkeypatch.setattr(kernel, "INTERPRETER_PROGRAMS", 6)
    monkeypatch.setattr(kernel, "_LAUNCHES", {})  # launches cached with the default tiles


def test_many_tiles_and_programs(small_tiles):
    x = data((37, 61))
    for ch_axis, blocks in ((0, 5), (1, 1)):
        plan = kernel.plan_for(x, ch_axis)
        args, constexprs = plan.args, plan.constexprs
        assert plan.grid[0] == blocks * args["n_splits"] and args["n_splits"] > 1
        assert constexprs["MULTI_SPLIT"] and args["C"] % constexprs["BLOCK_C"] != 0
        assert plan.tickets == blocks
    with use_backend("triton"):
        check(x, 0, *unset(x, 0), None)
        for x in (data((37, 61)), data((61, 37)).t(), data((37, 122), torch.float16)[:, ::2]):
            # a non-finite value in some programs' ranges only: those read their range again
            x[5, 7], x[30, 50] = NAN, -INF
            for ch_axis in (0, 1):
                check(x, ch_axis, *running_for(x, ch_axis), 0.3)


@pytest.mark.parametrize("poison", [NAN, -3e38, 3e38])
def test_every_partial_is_written(small_tiles, monkeypatch, poison):
    """Stale workspace memory is poisoned: a partial the kernel forgets shows in the result."""
    real = kernel.workspace

    def poisoned(device, name, numel, dtype):
        buffer = real(device, name, numel, dtype)
        return buffer.fill_(poison) if name == "aminmax_partials" else buffer

    x = with_nonfinite(data((37, 61)))
    monkeypatch.setattr(kernel, "workspace", poisoned)
    with use_backend("triton"):
        check(x, 0, *unset(x, 0), None)
        check(x, 1, *running_for(x, 1), 0.5)


@pytest.mark.parametrize("ch_axis", [0, -1])
def test_opcheck(backend, ch_axis):
    x = with_nonfinite(data((5, 7)))
    op = torch.ops.tritonobs.aminmax_per_channel.default
    count = torch.zeros((), dtype=torch.int64)
    torch.library.opcheck(op, (x, ch_axis, *unset(x, ch_axis), count, None))
    torch.library.opcheck(op, (x.t(), ch_axis, *running_for(x.t(), ch_axis), count, 0.01))


def test_rejects_bad_axis_and_running_shape():
    x = data((3, 4))
    with pytest.raises(ValueError, match="ch_axis"):
        aminmax_per_channel_triton(x, 2, *unset(x, 0), torch.tensor(0), None)
    with pytest.raises(ValueError, match="running"):
        aminmax_per_channel_triton(x, 0, torch.zeros(4), torch.zeros(4), torch.tensor(0), None)
    with pytest.raises(ValueError, match="running"):
        aminmax_per_channel_triton(x, 0, torch.empty(0), torch.empty(0), torch.tensor(0), None)
