"""``tritonobs::aminmax``: the Triton kernel (interpreter) against its torch reference, against plain
``torch.aminmax`` on the finite values and against torch.ao's moving average, all exact.

Tests taking the ``backend`` fixture run the op once per backend; the others call the Triton
launcher or force the Triton backend.
"""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the tritonobs::* ops)
from tests.conftest import INPUT_DTYPES, SHAPES
from tritonobs.backend import use_backend
from tritonobs.kernels import _launch
from tritonobs.kernels import aminmax as kernel
from tritonobs.ops.aminmax import aminmax_torch

INF = float("inf")
NAN = float("nan")

pytestmark = [
    pytest.mark.interpret,
    # inf - inf in the kernel's finiteness test and in EMA arithmetic that torch.where discards
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]


def state(lo: float = INF, hi: float = -INF) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(lo), torch.tensor(hi)


def data(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3 + 0.5).to(dtype)


def with_nonfinite(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """``x`` with NaN, +inf and -inf at a few positions."""
    g = torch.Generator().manual_seed(seed)
    flat = x.clone().reshape(-1)
    where = torch.randperm(flat.numel(), generator=g)[: max(3, flat.numel() // 50)]
    flat[where] = torch.tensor([NAN, INF, -INF], dtype=x.dtype).repeat(where.numel())[
        : where.numel()
    ]
    return flat.reshape(x.shape)


def plain(x, running_min, running_max, c):
    """Plain torch on the finite values of ``x``; the update written out as torch.ao does it."""
    x32 = x.to(torch.float32)
    finite = x32[torch.isfinite(x32)]
    nonfinite = torch.tensor(x.numel() - finite.numel())
    if finite.numel() == 0:
        return running_min, running_max, nonfinite
    batch_min, batch_max = torch.aminmax(finite)
    if c is None:
        return torch.min(batch_min, running_min), torch.max(batch_max, running_max), nonfinite
    if running_min == INF and running_max == -INF:
        return batch_min, batch_max, nonfinite
    new_min = running_min + c * (batch_min - running_min)
    return new_min, running_max + c * (batch_max - running_max), nonfinite


def run(op, *args):
    """``(min, max, nonfinite)`` after ``op(*inputs, min, max, nonfinite, c)`` updates copies of
    the state in place; ``args`` is ``(*inputs, running_min, running_max, c)``."""
    *inputs, running_min, running_max, c = args
    result = (running_min.clone(), running_max.clone(), torch.zeros((), dtype=torch.int64))
    assert op(*inputs, *result, c) is None
    return result


def assert_exact(result, expected) -> None:
    assert len(result) == len(expected) == 3
    for got, want in zip(result, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape, (got, want)
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def check(x, running_min, running_max, c) -> None:
    """The op (whatever backend is on) equals the reference and plain torch."""
    result = run(torch.ops.tritonobs.aminmax, x, running_min, running_max, c)
    assert_exact(result, run(aminmax_torch, x, running_min, running_max, c))
    assert_exact(result, plain(x, running_min, running_max, c))


@pytest.fixture
def small_tiles(monkeypatch):
    """64-element tiles: many tiles, edge tiles and several programs per channel block."""
    monkeypatch.setattr(kernel, "TILE", 64)
    monkeypatch.setattr(kernel, "MIN_CONTIGUOUS", 8)
    monkeypatch.setattr(kernel, "INTERPRETER_PROGRAMS", 6)
    monkeypatch.setattr(kernel, "_LAUNCHES", {})  # launches cached with the default tiles


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_and_dtypes(backend, shape, dtype):
    x = data(shape, dtype)
    check(x, *state(), None)
    check(x, *state(-0.25, 0.75), 0.01)


LAYOUTS = {
    "transposed": lambda: data((33, 64)).t(),
    "step_sliced": lambda: data((40, 50))[::3, 1::2],
    "permuted_4d": lambda: data((2, 3, 5, 7)).permute(2, 0, 3, 1),
    "channels_last": lambda: data((2, 3, 5, 7)).to(memory_format=torch.channels_last),
    "expanded": lambda: data((5, 1, 7)).expand(5, 4, 7),
    "offset": lambda: data((100,))[13:90],
    "five_strided_axes": lambda: data((5, 6, 5, 6, 5))[::2, ::2, ::2, ::2, ::2],
    "scalar": lambda: data(()),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous(backend, layout, dtype):
    x = LAYOUTS[layout]().to(dtype)
    check(x, *state(), None)
    check(x, *state(1.0, 2.0), 0.5)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
def test_nonfinite_values_are_skipped_and_counted(backend, dtype):
    x = with_nonfinite(data((37, 29), dtype))
    check(x, *state(), None)
    check(x, *state(-1.0, 1.0), 0.1)
    check(x.t(), *state(), 0.1)


@pytest.mark.parametrize("c", [None, 0.1])
@pytest.mark.parametrize("running", [(INF, -INF), (-1.5, 2.5)])
@pytest.mark.parametrize("fill", [NAN, INF, -INF, "mixed"])
def test_batch_without_finite_values_keeps_running(backend, fill, running, c):
    x = (
        with_nonfinite(torch.full((6, 9), NAN), seed=3)
        if fill == "mixed"
        else torch.full((9,), fill)
    )
    result = run(torch.ops.tritonobs.aminmax, x, *state(*running), c)
    assert_exact(result, (*state(*running), torch.tensor(x.numel())))


def test_moving_average_rounds_like_torch(backend):
    """fp32, rounded after each op, ``c`` in fp32: about a quarter of these differ otherwise."""
    g = torch.Generator().manual_seed(5)
    for _ in range(12):
        lo, hi = sorted((torch.randn(2, generator=g) * 4).tolist())
        check(torch.randn(9, generator=g) * 3, *state(lo, hi), 0.3)


def test_float64_input(backend):
    x = data((17, 5)).double() * 1e20
    x[3, 2] = 1e300  # finite in float64, inf in float32: counted like the reference does
    check(x, *state(), None)


def test_large_input_several_programs(backend):
    x = with_nonfinite(data((256, 1024), torch.bfloat16))
    check(x, *state(), None)
    check(x[:, :1000], *state(0.0, 1.0), 0.25)


def test_many_tiles_and_programs(small_tiles):
    x = data((37, 61))
    plan = kernel.plan_for(x, None)
    assert plan.grid[0] > 1 and plan.constexprs["MULTI_SPLIT"]
    with use_backend("triton"):
        check(x, *state(), None)
        for x in (data((37, 61)), data((61, 37)).t(), data((37, 122), torch.float16)[:, ::2]):
            check(x, *state(-2.0, 2.0), 0.3)
            # a non-finite value in some programs' ranges only: those read their range again
            x[5, 7], x[30, 50] = NAN, -INF
            check(x, *state(), 0.3)


def tile_mix(x: torch.Tensor, ch_axis: int | None) -> tuple[int, int]:
    """(full tiles, edge tiles) of the launch over ``x``: the kernel's pass 1 and pass 2."""
    plan = kernel.plan_for(x, ch_axis)
    args, blocks = plan.args, plan.constexprs
    channel_blocks = -(-args["C"] // blocks["BLOCK_C"])
    full = args["C"] // blocks["BLOCK_C"] * (args["R"] // blocks["BLOCK_R"])
    full *= args["K"] // blocks["BLOCK_K"]
    return full, channel_blocks * args["n_tiles"] - full


# Per tensor, 64-element tiles: (make x of a dtype, its full tiles, its edge tiles). The edges are
# the ragged end of a row, ragged row blocks or both.
FULL_AND_TAIL = {
    "one_element": (lambda dtype: data((1,), dtype), 1, 0),
    "tail_only": (lambda dtype: data((63,), dtype), 0, 1),
    "one_full": (lambda dtype: data((64,), dtype), 1, 0),
    "full_and_tail": (lambda dtype: data((65,), dtype), 1, 1),
    "two_full_and_tail": (lambda dtype: data((129,), dtype), 2, 1),
    "seven_full": (lambda dtype: data((448,), dtype), 7, 0),
    "seven_full_and_tail": (lambda dtype: data((449,), dtype), 7, 1),
    "several_programs": (lambda dtype: data((1285,), dtype), 20, 1),
    "full_row_blocks": (lambda dtype: data((8, 19), dtype)[:, :16], 2, 0),
    "ragged_row_block": (lambda dtype: data((11, 19), dtype)[:, :16], 2, 1),
    "ragged_rows_and_columns": (lambda dtype: data((11, 16), dtype)[:, :13], 0, 3),
    "ragged_end_of_each_row": (lambda dtype: data((3, 73), dtype)[:, :70], 3, 3),
    "programs_over_rows": (lambda dtype: data((6, 203), dtype)[:, :200], 18, 6),
}


@pytest.mark.parametrize("programs", [1, 3, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", FULL_AND_TAIL)
def test_full_tiles_and_tails(small_tiles, monkeypatch, case, dtype, programs):
    """Every mix of full tiles (unmasked, pipelined) and edge tiles (masked) in a program's range,
    with finite values only, then with a NaN and an infinity (the programs that see one read their
    full tiles again, masked)."""
    monkeypatch.setattr(kernel, "_programs", lambda _device, _numel: programs)
    make, full, edge = FULL_AND_TAIL[case]
    x = make(dtype)
    assert tile_mix(x, None) == (full, edge)
    assert kernel.plan_for(x, None).grid == (min(programs, full + edge),)
    with use_backend("triton"):
        check(x, *state(), None)
        check(x, *state(-2.0, 2.0), 0.3)
        x[(0,) * x.dim()] = NAN
        x[(-1,) * x.dim()] = -INF
        check(x, *state(), None)


# a channel whose tile holds one value, NaN: the interpreter's max over it warns
@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")
@pytest.mark.parametrize("ch_axis", [0, 1, 2])
@pytest.mark.parametrize("shape", [(5, 19, 70), (4, 24, 16), (7, 33, 9)], ids=str)
def test_full_tiles_and_tails_per_channel(small_tiles, shape, ch_axis):
    """Per channel on each axis: full and ragged channel blocks, ragged ends of the reduced axes,
    several programs per channel block; finite values only, then a few non-finite ones."""
    from tests.test_aminmax_per_channel import check as check_per_channel
    from tests.test_aminmax_per_channel import running_for, unset

    x = data(shape, torch.bfloat16)
    full, edge = tile_mix(x, ch_axis)
    assert full + edge > 1
    with use_backend("triton"):
        check_per_channel(x, ch_axis, *unset(x, ch_axis), None)
        check_per_channel(x, ch_axis, *running_for(x, ch_axis), 0.3)
        check_per_channel(with_nonfinite(x), ch_axis, *running_for(x, ch_axis), None)


@pytest.mark.parametrize("poison", [NAN, -3e38, 3e38])
def test_every_partial_is_written(small_tiles, monkeypatch, poison):
    """Stale workspace memory is poisoned: a partial the kernel forgets shows in the result."""
    real = kernel.workspace

    def poisoned(device, name, numel, dtype):
        buffer = real(device, name, numel, dtype)
        return buffer.fill_(poison) if name == "aminmax_partials" else buffer

    monkeypatch.setattr(kernel, "workspace", poisoned)
    with use_backend("triton"):
        check(with_nonfinite(data((37, 61))), *state(), None)
        check(data((37, 61), torch.bfloat16), *state(-1.0, 1.0), 0.5)


def test_moving_average_matches_torch_ao_bit_for_bit():
    """Several batches through the op and through torch.ao's MovingAverageMinMaxObserver."""
    observer = torch.ao.quantization.MovingAverageMinMaxObserver(averaging_constant=0.037)
    running = state()
    with use_backend("triton"):
        for seed in range(4):
            x = data((29, 31), torch.bfloat16, seed=seed) * (seed + 1)
            observer(x)
            running = run(torch.ops.tritonobs.aminmax, x, *running, 0.037)[:2]
    torch.testing.assert_close(running[0], observer.min_val, atol=0, rtol=0)
    torch.testing.assert_close(running[1], observer.max_val, atol=0, rtol=0)


def test_no_host_synchronisation(monkeypatch):
    """Nothing in the launcher reads a tensor's value on the host."""

    def sync(*_args, **_kwargs):
        raise AssertionError("host synchronisation in the launcher")

    x = with_nonfinite(data((50, 70)))
    running = state(-1.0, 1.0)
    with monkeypatch.context() as m:
        for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, sync)
        result = run(kernel.aminmax_triton, x, *running, 0.2)
    assert_exact(result, run(aminmax_torch, x, *running, 0.2))


def test_grid_follows_the_size():
    cpu = torch.device("cpu")
    assert kernel._programs(cpu, 7) == 1
    assert kernel._programs(cpu, 1024 * 1024) == kernel.INTERPRETER_PROGRAMS <= 16
    plan = kernel._plan((1024, 1024), (1024, 1), None, kernel._programs(cpu, 1024 * 1024))
    assert plan.grid[0] == plan.args["n_splits"] == 16
    # an H200: whole waves of the blocks that fit per SM, under 1% of the input in partials
    programs = kernel.PROGRAMS_PER_SM * 132
    for ch_axis, waves in ((None, 1), (0, 2), (1, 2)):
        plan = kernel._plan((8192, 8192), (8192, 1), ch_axis, programs)
        assert (waves - 1) * programs < plan.grid[0] <= waves * programs
        assert waves * programs - plan.grid[0] < 32
        assert plan.partials <= 2 * 8192 * 8192 // 100


@pytest.mark.parametrize("c", [None, 0.01])
def test_opcheck(backend, c):
    x = with_nonfinite(data((5, 7)))
    count = torch.zeros((), dtype=torch.int64)
    torch.library.opcheck(torch.ops.tritonobs.aminmax.default, (x, *state(), count, c))
    torch.library.opcheck(torch.ops.tritonobs.aminmax.default, (x.t(), *state(-1.0, 1.0), count, c))


def test_rejects_integer_input():
    with pytest.raises(TypeError, match="float32"):
        kernel.aminmax_triton(torch.ones(3, dtype=torch.int32), *state(), torch.tensor(0), None)


def test_no_hidden_copy_of_ordinary_layouts():
    """Every layout above is read in place, per tensor and per channel on its first and last axis,
    but five strided axes reduced per tensor: more than four reduced axes that do not merge (no
    model makes them) take one contiguous copy, counted, with the same result."""
    copies = _launch.COPIES["aminmax"]
    for name, make in LAYOUTS.items():
        x = make()
        axes = [0, x.dim() - 1] if x.dim() else []
        for ch_axis in axes if name == "five_strided_axes" else [None, *axes]:
            channels = () if ch_axis is None else (x.shape[ch_axis],)
            kernel.aminmax_update(
                x, ch_axis, torch.full(channels, INF), torch.full(channels, -INF),
                torch.zeros((), dtype=torch.int64), None,
            )  # fmt: skip
    assert _launch.COPIES["aminmax"] == copies
    exotic = LAYOUTS["five_strided_axes"]()
    assert kernel.plan_for(exotic, None).contiguous
    result = run(kernel.aminmax_triton, exotic, *state(), None)
    assert _launch.COPIES["aminmax"] == copies + 1
    assert_exact(result, plain(exotic, *state(), None))
