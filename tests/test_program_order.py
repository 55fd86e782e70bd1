"""Every multi-program kernel gives bit-identical results whatever order its programs run in.

The interpreter runs programs in order; ``tests/program_order.py`` shuffles them (several seeds),
and each case is compared bit for bit with the in-order run.
"""

from __future__ import annotations

import pytest
import torch

from tests.program_order import shuffled_programs
from tests.test_aminmax import data, with_nonfinite
from tritonobs.kernels import aminmax as kernel

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

SEEDS = (1, 2)


def _aminmax(x: torch.Tensor, ch_axis: int | None, c: float | None) -> tuple[torch.Tensor, ...]:
    channels = None if ch_axis is None else x.shape[ch_axis]
    shape = () if channels is None else (channels,)
    state = (
        torch.full(shape, -0.5),
        torch.full(shape, 0.5),
        torch.zeros((), dtype=torch.int64),
    )
    # Poisoned partials: a program that reads them before their writer ran shows.
    kernel.launch_for(x, ch_axis, c is not None).partials.fill_(float("nan"))
    kernel.aminmax_update(x, ch_axis, *state, c)
    return state


@pytest.fixture
def small_tiles(monkeypatch):
    """64-element tiles: several programs per channel block, all drawing tickets."""
    monkeypatch.setattr(kernel, "TILE", 64)
    monkeypatch.setattr(kernel, "MIN_CONTIGUOUS", 8)
    monkeypatch.setattr(kernel, "INTERPRETER_PROGRAMS", 6)
    monkeypatch.setattr(kernel, "_LAUNCHES", {})


@pytest.mark.parametrize("c", [None, 0.25])
@pytest.mark.parametrize("ch_axis", [None, 0, 1])
def test_aminmax_handoff_is_order_independent(small_tiles, ch_axis, c):
    x = with_nonfinite(data((13, 61)))
    expected = _aminmax(x, ch_axis, c)
    assert kernel.launch_for(x, ch_axis, c is not None).plan.args["n_splits"] > 1
    for seed in SEEDS:
        with shuffled_programs(seed) as grids:
            got = _aminmax(x, ch_axis, c)
        assert grids and max(grids) > 1
        for g, e in zip(got, expected, strict=True):
            assert torch.equal(g, e), (seed, g, e)
