"""``tritonobs::amax_histogram_update``: the collect step, torch reference and Triton kernels.

ModelOpt parity of whole streams is in ``tests/test_amax_histogram.py``; here the op itself: the
in-place contract (buffers keep their identity), opcheck, and the Triton kernels (interpreter)
bit-equal to the torch reference after every batch of streams that grow, stay, start from zeros,
hold NaN/inf, overflow the capacity, or grow past torch's arange threading split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
from tests.conftest import interpreted_launches
from tritonobs.backend import use_backend
from tritonobs.ops.amax_histogram_update import amax_histogram_update_torch

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

NAN, INF = float("nan"), float("inf")


def state(capacity: int = 256):
    return (
        torch.zeros(capacity),
        torch.zeros(capacity + 1),
        torch.zeros((), dtype=torch.int64),
        torch.zeros((), dtype=torch.int64),
        torch.zeros((), dtype=torch.int64),
    )


def test_stream_updates_buffers_in_place(backend: str) -> None:
    buffers = state()
    ids = [b.data_ptr() for b in buffers]
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 2.5, 0.5):
        x = torch.randn(3, 50, generator=g) * scale
        torch.ops.tritonobs.amax_histogram_update(x, *buffers, 32, False)
    hist, edges, num_bins, num_edges, nonfinite = buffers
    assert [b.data_ptr() for b in buffers] == ids
    assert int(num_bins) > 32 and int(num_edges) >= int(num_bins) and hist.sum() == 450
    assert edges[int(num_edges) - 1] >= 2.5 * 0.0 and int(nonfinite) == 0


def test_opcheck(backend: str) -> None:
    x = torch.randn(40, generator=torch.Generator().manual_seed(1))
    torch.library.opcheck(
        torch.ops.tritonobs.amax_histogram_update.default, (x, *state(64), 16, True)
    )


def _randn(*shape: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _with(x: torch.Tensor, values: dict[int, float]) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[list(values)] = torch.tensor(list(values.values()))
    return x


# name -> (batches, bins, skip_zeros, capacity)
Stream = tuple[list[torch.Tensor], int, bool, int]
STREAMS: dict[str, Callable[[], Stream]] = {
    # Growth (by odd factors), no growth, 1 and 7 bins.
    "grow": lambda: (
        [
            _randn(5, 123),
            _randn(37, 11, scale=3, seed=1),
            _randn(7),
            _randn(9, 9, scale=10, seed=2),
        ],
        64,
        False,
        4096,
    ),
    "one_bin": lambda: ([_randn(100), _randn(50, scale=2.7, seed=1)], 1, False, 64),
    "seven_bins_skip_zeros": lambda: (
        [_with(_randn(100), {0: 0.0, 5: 0.0}), _randn(50, scale=3.3, seed=1)],
        7,
        True,
        64,
    ),
    # Zeros only, then data: the histogram starts over with the zeros in bin 0.
    "zeros_then_data": lambda: (
        [torch.zeros(50), torch.zeros(3, 11), _randn(40), _randn(40, scale=4, seed=1)],
        300,
        False,
        2048,
    ),
    # With skip_zeros, a batch of zeros changes nothing and zeros in a batch are not counted.
    "zeros_skipped": lambda: (
        [torch.zeros(50), torch.tensor([0.0, 0.0, 1.0, 0.0]), _randn(40, scale=2)],
        8,
        True,
        256,
    ),
    # NaN/inf are skipped and counted; a batch of NaN only changes nothing else.
    "nonfinite": lambda: (
        [
            _with(_randn(2049), {3: NAN, 70: INF, 2000: -INF}),
            _with(_randn(30, scale=5, seed=1), {29: NAN}),
            torch.tensor([NAN, INF]),
        ],
        2048,
        False,
        65536,
    ),
    # Every value equal: the range is [0, c] with c in the last bin.
    "constant": lambda: ([torch.full((77,), -0.75), torch.full((5,), 0.75)], 33, False, 64),
    # Capacity exceeded on growth, then a later batch (ignored, NaN not counted).
    "overflow_on_growth": lambda: (
        [_randn(100), _randn(100, scale=50, seed=1), _with(_randn(100, seed=2), {0: NAN})],
        16,
        False,
        64,
    ),
    "overflow_on_first_batch": lambda: ([_randn(100), _randn(10, seed=1)], 128, False, 64),
}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def _assert_same_after_each_batch(stream: Stream) -> None:
    batches, bins, skip_zeros, capacity = stream
    expected, actual = state(capacity), state(capacity)
    with use_backend("triton"), interpreted_launches() as launched:
        for i, x in enumerate(batches):
            amax_histogram_update_torch(x, *expected, bins, skip_zeros)
            torch.ops.tritonobs.amax_histogram_update(x, *actual, bins, skip_zeros)
            for name, e, a in zip(
                ("histogram", "bin_edges", "num_bins", "num_edges", "nonfinite"),
                expected,
                actual,
                strict=True,
            ):
                assert torch.equal(_bits(a), _bits(e)), f"{name} after batch {i}"
    assert "_amax_count_kernel" in launched


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_triton_equals_reference(name: str, dtype: torch.dtype) -> None:
    batches, *rest = STREAMS[name]()
    _assert_same_after_each_batch(([x.to(dtype) for x in batches], *rest))


def test_non_contiguous_inputs() -> None:
    x = _randn(37, 11, scale=2)
    batches = [x.t(), _randn(300, seed=1)[::3] * 5, _randn(4, 6, 5, seed=2).permute(2, 0, 1)]
    _assert_same_after_each_batch((batches, 2048, True, 65536))


@pytest.fixture(params=[1, 2])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_growth_past_the_arange_split(threads: int) -> None:
    # About 90000 edges: torch's CPU arange splits them between threads, and the edges with them.
    stream = ([_randn(3000), _randn(5000, scale=40, seed=1)], 2048, False, 1 << 17)
    _assert_same_after_each_batch(stream)
    assert int(stream[0][1].abs().max() / stream[0][0].abs().max() * 2048) > 32768
