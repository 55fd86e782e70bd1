"""The ops' eager entry point: a plain call goes straight to the kernel the dispatcher would pick;
anything that could be watching (a mode, the profiler, a subclass, autograd, torch.compile) goes
through ``torch.ops.tritonobs.<op>``, and both give the same state."""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

import tritonobs
from tritonobs.backend import use_backend
from tritonobs.ops.aminmax import aminmax, aminmax_torch


class _Seen(TorchDispatchMode):
    """Records the ops that reach the dispatcher and runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class _PassThrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _through_dispatcher() -> bool:
    return any(frame.f_code is OpOverload.__call__.__code__ for frame, *_ in inspect.stack())


@pytest.fixture
def routes(monkeypatch):
    """Runs ``tritonobs::aminmax`` on a stand-in launcher (Triton backend) that records, for each
    call, whether it came through the dispatcher, and defers to the torch reference."""
    calls: list[bool] = []

    def launcher(*args):
        calls.append(_through_dispatcher())
        return aminmax_torch(*args)

    module = types.ModuleType("tritonobs.kernels.aminmax")
    module.aminmax_triton = launcher
    monkeypatch.setitem(sys.modules, "tritonobs.kernels.aminmax", module)
    with use_backend("triton"):
        yield calls


def _state():
    return (
        torch.tensor(float("inf")),
        torch.tensor(float("-inf")),
        torch.zeros((), dtype=torch.int64),
    )


def test_plain_call_skips_the_dispatcher(routes):
    x = torch.randn(6, 5)
    running_min, running_max, count = _state()
    aminmax(x, running_min, running_max, count, None)
    assert routes == [False]
    assert running_min.item() == x.min().item() and running_max.item() == x.max().item()


def _profiled():
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU])


@pytest.mark.parametrize(
    "context",
    [_Seen, _profiled, _PassThrough],
    ids=["dispatch-mode", "profiler", "function-mode"],
)
def test_watched_call_goes_through_the_dispatcher(routes, context):
    x = torch.randn(6, 5)
    running_min, running_max, count = _state()
    with context():
        aminmax(x, running_min, running_max, count, None)
    assert routes == [True]
    assert running_min.item() == x.min().item()


def test_dispatch_mode_sees_the_op():
    x = torch.randn(4, 3)
    with _Seen() as seen:
        tritonobs.MinMaxObserver()(x)
    assert "tritonobs.aminmax.default" in seen.ops


def test_input_requiring_grad_goes_through_the_dispatcher(routes):
    x = torch.randn(6, 5, requires_grad=True)
    aminmax(x, *_state(), None)
    assert routes == [True]


def test_subclass_goes_through_the_dispatcher(routes):
    class Sub(torch.Tensor):
        pass

    x = torch.randn(6, 5).as_subclass(Sub)
    aminmax(x, *_state(), None)
    assert routes == [True]


def test_meta_tensor_reaches_the_fake_kernel():
    """A device without a registered kernel is the dispatcher's business (meta: the fake)."""
    x = torch.empty(6, 5, device="meta")
    running = torch.empty((), device="meta")
    aminmax(x, running, running, torch.empty((), dtype=torch.int64, device="meta"), None)


def test_compiled_graph_holds_the_op():
    import torch._dynamo

    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    obs = tritonobs.MinMaxObserver()
    torch.compile(obs, backend=backend, fullgraph=True)(torch.randn(4, 5))
    targets = [node.target for gm in graphs for node in gm.graph.nodes]
    assert torch.ops.tritonobs.aminmax.default in targets


def _observers():
    return [
        tritonobs.MinMaxObserver(),
        tritonobs.MovingAverageMinMaxObserver(averaging_constant=0.3),
        tritonobs.PerChannelMinMaxObserver(ch_axis=1),
        tritonobs.MovingAveragePerChannelMinMaxObserver(ch_axis=0, averaging_constant=0.3),
        tritonobs.HistogramObserver(bins=64),
        tritonobs.AmaxHistogramObserver(),
    ]


@pytest.mark.parametrize("index", range(len(_observers())))
def test_eager_entry_and_dispatcher_give_the_same_state(index):
    """The same batches, once by plain calls and once under a mode that forces the dispatcher:
    every buffer and the qparams are equal, bit for bit."""
    plain, watched = _observers()[index], _observers()[index]
    generator = torch.Generator().manual_seed(index)
    batches = [torch.randn(7, 9, generator=generator) * (1 + k) for k in range(3)]
    batches.append(torch.tensor([[float("nan")] * 9] * 7))
    for x in batches:
        plain(x)
        with _Seen():
            watched(x)
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), watched.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert torch.equal(plain.nonfinite_count, watched.nonfinite_count)
    if hasattr(plain, "calculate_qparams"):
        with _Seen():
            expected = watched.calculate_qparams()
        for a, b in zip(plain.calculate_qparams(), expected, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("index", range(len(_observers())))
def test_input_requiring_grad_is_observed_detached(index):
    observer = _observers()[index]
    x = torch.randn(7, 9, requires_grad=True)
    assert observer(x) is x
    reference = _observers()[index]
    reference(x.detach().clone())
    for (name, a), (_, b) in zip(
        observer.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
        assert not a.requires_grad, name
