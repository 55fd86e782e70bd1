"""No launcher reads device data on the host: every op's Triton path and every observer forward.

On a GPU, a host read of device memory (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``,
``int(t)``, ``.cpu()``, ...) waits for every kernel queued before it; ``tests/test_cuda.py`` runs
the observer forwards under ``torch.cuda.set_sync_debug_mode("error")``. Here, on CPU tensors
under the interpreter, those methods raise :class:`HostRead` inside :func:`host_reads`, so a
launcher that reads a tensor fails with a traceback at the read. Exempt: tensors the call makes
with ``torch.tensor`` and no device (host scalars, e.g. ``weight_mse_sweep`` rounding its exponent
to the weight dtype), which are never device memory.

Each case must also launch a kernel (else the check proves nothing).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import tritonobs
from tests.conftest import interpreted_launches
from tritonobs.backend import use_backend

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


class HostRead(AssertionError):
    """A tensor's values were read on the host."""


@contextlib.contextmanager
def host_reads(allowed: collections.Counter[str] | None = None) -> Iterator[list[str]]:
    """Within the block, the host reads of :data:`READS` raise :class:`HostRead`.

    Args:
        allowed: reads let through, by method name and count (documented host round-trips).

    Yields:
        The names of the reads made, in order (the allowed ones).
    """
    allowed = allowed or collections.Counter()
    made: list[str] = []
    host_made: list[torch.Tensor] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    make_tensor = torch.tensor

    def tensor(*args: Any, **kwargs: Any) -> torch.Tensor:
        result = make_tensor(*args, **kwargs)
        if kwargs.get("device") is None:
            host_made.append(result)
        return result

    def guarded(name: str) -> Callable[..., Any]:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not any(self is t for t in host_made):
                made.append(name)
                if made.count(name) > allowed[name]:
                    raise HostRead(f"Tensor.{name} on a {tuple(self.shape)} tensor")
            return originals[name](self, *args, **kwargs)

        return read

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "tensor", tensor)
        for name in READS:
            patch.setattr(torch.Tensor, name, guarded(name))
        yield made


def _data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _with_nonfinite(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[[0, 5, -1]] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    return x


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def _count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


def _aminmax() -> None:
    x = _with_nonfinite(_data(13, 61))
    torch.ops.tritonobs.aminmax(x, _scalar(-0.5), _scalar(0.5), _count(), 0.1)


def _aminmax_per_channel() -> None:
    x = _with_nonfinite(_data(13, 61)).t()
    low, high = torch.full((61,), float("inf")), torch.full((61,), float("-inf"))
    torch.ops.tritonobs.aminmax_per_channel(x, 0, low, high, _count(), None)


def _histc() -> None:
    torch.ops.tritonobs.histc(_with_nonfinite(_data(5, 123)), _scalar(-1.0), _scalar(2.0), 37)


def _histc_own_range() -> None:
    # lo == hi: the range comes from the data, on the device.
    torch.ops.tritonobs.histc(_data(5, 123), _scalar(0.0), _scalar(0.0), 37)


def _histogram_update() -> None:
    # A range that grows: the re-binning is decided on the device.
    histogram = torch.zeros(64)
    histogram[10:20] = 3.0
    x = _with_nonfinite(_data(7, 45) * 4)
    torch.ops.tritonobs.histogram_update(x, histogram, _scalar(-1.0), _scalar(1.0), _count(), 16)


def _histogram_rebin() -> None:
    histogram = torch.rand(200, generator=torch.Generator().manual_seed(1))
    scalars = (_scalar(-1.0), _scalar(1.0), _scalar(-2.5), _scalar(3.0))
    torch.ops.tritonobs.histogram_rebin(histogram, *scalars, 16)


def _quantization_error() -> None:
    histogram = torch.rand(101, generator=torch.Generator().manual_seed(2))
    starts, ends = torch.tensor([0, 3, 50]), torch.tensor([100, 97, 50])
    torch.ops.tritonobs.quantization_error(histogram, _scalar(-1.0), _scalar(1.0), starts, ends, 16)


def _entropy_divergence() -> None:
    counts = torch.randint(0, 60, (300,), generator=torch.Generator().manual_seed(3))
    torch.ops.tritonobs.entropy_divergence(counts, 100, 3, 128)


def _histogram_mse(fp8: bool) -> Callable[[], None]:
    def run() -> None:
        counts = torch.rand(123, generator=torch.Generator().manual_seed(4)) * 100
        centers = torch.linspace(0.0, 3.7, 123)
        torch.ops.tritonobs.histogram_mse(counts, centers, 0, 2, 8, False, fp8)

    return run


def _weight_mse_sweep(dtype: torch.dtype) -> Callable[[], None]:
    def run() -> None:
        x = (_data(5, 70) * 0.05).to(dtype)
        scales = torch.stack([x.abs().amax(-1).float() / 127 * p for p in (1.0, 0.9)])
        zero_points = torch.zeros_like(scales)
        torch.ops.tritonobs.weight_mse_sweep(x, scales, zero_points, 8, False, True, 2.4)

    return run


OPS = {
    "aminmax": _aminmax,
    "aminmax_per_channel": _aminmax_per_channel,
    "histc": _histc,
    "histc_own_range": _histc_own_range,
    "histogram_update": _histogram_update,
    "histogram_rebin": _histogram_rebin,
    "quantization_error": _quantization_error,
    "entropy_divergence": _entropy_divergence,
    "histogram_mse_int8": _histogram_mse(fp8=False),
    "histogram_mse_fp8": _histogram_mse(fp8=True),
    "weight_mse_sweep_fp32": _weight_mse_sweep(torch.float32),
    "weight_mse_sweep_bf16": _weight_mse_sweep(torch.bfloat16),
}


@pytest.mark.parametrize("op", OPS)
def test_op_reads_nothing_on_the_host(op: str) -> None:
    with use_backend("triton"), interpreted_launches() as launched, host_reads():
        OPS[op]()
    assert launched


OBSERVERS = [
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
]


@pytest.mark.parametrize("name", OBSERVERS)
def test_forward_reads_nothing_on_the_host(name: str) -> None:
    # Three batches: the first initialises, the second widens the range (re-binning), the third
    # holds NaN and infinities.
    with use_backend("triton"):
        observer = getattr(tritonobs, name)()
        with interpreted_launches() as launched, host_reads():
            observer(_data(6, 19))
            observer(_data(6, 19, seed=1) * 3)
            observer(_with_nonfinite(_data(6, 19, seed=2)))
    assert launched
    assert int(observer.nonfinite_count) == 3


def test_amax_histogram_forward_reads_nothing_on_the_host() -> None:
    # The first batch, a growing range, then NaN and infinities.
    with use_backend("triton"):
        observer = tritonobs.AmaxHistogramObserver()
        with interpreted_launches() as launched, host_reads():
            observer(_data(6, 19))
            observer(_data(6, 19, seed=1) * 3)
            observer(_with_nonfinite(_data(6, 19, seed=2)))
    assert launched
    assert int(observer.nonfinite_count) == 3
    assert int(observer.num_bins) > observer.bins


def test_histogram_search_reads_only_what_it_documents() -> None:
    # The search's walk runs on the host (calculate_qparams, not forward): one download of the
    # cumulative histogram, then one stop flag per full batch of candidates. relu/37/16 stops on
    # its 9th candidate, in the second batch, which is shorter than a full one: one flag.
    from tests.test_histogram_search import make_histogram

    histogram, min_val, max_val = make_histogram("relu", 37)
    with use_backend("triton"), interpreted_launches() as launched:
        with host_reads(collections.Counter(tolist=1, item=1)) as reads:
            torch.ops.tritonobs.histogram_search(histogram, min_val, max_val, 16)
    assert reads == ["tolist", "item"]
    assert "_histogram_search_kernel" in launched
