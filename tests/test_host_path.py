"""The CUDA code path's host work, proven on CPU tensors: one launch per forward, the input's device,
buffers updated in place, cached plans, workspaces left clean.

Triton launches are stubbed (``tritonobs.hostpath``) where only the host side is under test; the
tests that check values run the kernels under the interpreter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
import torch.ao.quantization.observer as ao
from torch._dynamo.utils import counters

import tritonobs
from tritonobs.backend import use_backend
from tritonobs.hostpath import count_launches, observer_host_path, stub_triton_launches
from tritonobs.kernels import _launch
from tritonobs.kernels import aminmax as kernel

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

MIN_MAX = [
    ("MinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {"averaging_constant": 0.25}),
    ("PerChannelMinMaxObserver", {"ch_axis": 0}),
    ("PerChannelMinMaxObserver", {"ch_axis": -1}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": 1, "averaging_constant": 0.5}),
]
BUFFERS = ("min_val", "max_val", "nonfinite_count")


def _id(case) -> str:
    name, kwargs = case
    return name + "".join(f"-{k}{v}" for k, v in kwargs.items())


def _make(module, case):
    name, kwargs = case
    return getattr(module, name)(**kwargs)


def _batches(n: int = 3, shape=(6, 5, 7)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator) * (i + 1) for i in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", MIN_MAX, ids=_id)
def test_steady_forward_is_one_triton_launch_and_nothing_else(case, dtype):
    observer = _make(tritonobs, case)
    x = torch.randn(33, 17, 9).to(dtype)
    with use_backend("torch"):
        observer(x)
    with use_backend("triton"):
        observer(x)  # plan and workspaces made
        count = count_launches(lambda: observer(x))
    assert count.triton == ("_aminmax_kernel",)
    assert count.torch == ()
    assert count.syncs == 0


@pytest.mark.parametrize("case", MIN_MAX[2:], ids=_id)
def test_first_per_channel_forward_launches_one_kernel(case):
    """The first batch sizes the buffers: two fills and two copies of C values besides the kernel."""
    observer = _make(tritonobs, case)
    x = torch.randn(4, 5, 6)
    with use_backend("triton"):
        _make(tritonobs, case)(x)  # plan and workspaces made
        count = count_launches(lambda: observer(x))
    assert count.triton == ("_aminmax_kernel",)
    assert sorted(count.torch) == ["aten::copy_", "aten::copy_", "aten::fill_", "aten::fill_"]


def test_observer_host_path_reports_the_stubbed_forward():
    count, micros = observer_host_path(tritonobs.MinMaxObserver(), torch.randn(64, 32), calls=50)
    assert count.total == 1 and count.triton == ("_aminmax_kernel",)
    assert micros > 0


def test_stub_records_grid_and_arguments_and_restores_launches():
    x = torch.randn(37, 61)
    running = (torch.tensor(float("inf")), torch.tensor(float("-inf")))
    count = torch.zeros((), dtype=torch.int64)
    plan = kernel.plan_for(x, None)
    with stub_triton_launches() as launches:
        kernel.aminmax_triton(x, *running, count, None)
    assert [(launch.kernel, launch.grid) for launch in launches] == [("_aminmax_kernel", plan.grid)]
    assert launches[0].kwargs["enable_fp_fusion"] is False
    assert running[0].item() == float("inf")  # nothing ran
    kernel.aminmax_triton(x, *running, count, None)
    assert running[0].item() == x.min().item()


def test_launch_runs_under_the_inputs_device(monkeypatch):
    """Triton launches on the current device: every launch enters the input's device first."""
    entered: list[torch.device] = []
    real = _launch.device_guard

    def recording(device):
        entered.append(device)
        return real(device)

    monkeypatch.setattr(kernel, "device_guard", recording)
    x = torch.randn(5, 7)
    with use_backend("triton"):
        for case in MIN_MAX:
            _make(tritonobs, case)(x)
    assert entered == [x.device] * len(MIN_MAX)


def test_device_guard_is_torch_cuda_device_for_cuda_tensors():
    guard = _launch.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert _launch.device_guard(torch.device("cpu")) is _launch.device_guard(torch.device("cpu"))


def test_plan_is_computed_once_per_layout(monkeypatch):
    calls = []
    real = kernel._plan

    def counting(*args):
        calls.append(args[:3])
        return real(*args)

    monkeypatch.setattr(kernel, "_LAUNCHES", {})
    monkeypatch.setattr(kernel, "_plan", counting)
    observer = tritonobs.PerChannelMinMaxObserver(ch_axis=1)
    x = torch.randn(6, 5, 7)
    with use_backend("triton"), stub_triton_launches():
        for _ in range(3):
            observer(x)
            observer(x.transpose(0, 2).contiguous().transpose(0, 2))
    assert calls == [((6, 5, 7), (35, 7, 1), 1), ((6, 5, 7), (1, 6, 30), 1)]


def test_integer_helpers_match_triton():
    import triton

    for n in (1, 2, 3, 31, 32, 33, 1000, 2**31 + 1):
        assert _launch.next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 7, 32):
            assert _launch.cdiv(n, d) == triton.cdiv(n, d)


def test_workspace_is_kept_and_tickets_left_at_zero(monkeypatch):
    """Several programs per channel block draw tickets; the last one puts its ticket back."""
    monkeypatch.setattr(kernel, "TILE", 64)
    monkeypatch.setattr(kernel, "MIN_CONTIGUOUS", 8)
    monkeypatch.setattr(kernel, "INTERPRETER_PROGRAMS", 6)
    monkeypatch.setattr(kernel, "_LAUNCHES", {})
    observers = [tritonobs.PerChannelMinMaxObserver(ch_axis=0), tritonobs.MinMaxObserver()]
    references = [ao.PerChannelMinMaxObserver(ch_axis=0), ao.MinMaxObserver()]
    x = torch.randn(37, 61)
    assert kernel.plan_for(x, 0).tickets == 5 and kernel.plan_for(x, None).constexprs["MULTI_SPLIT"]
    tickets = None
    with use_backend("triton"):
        for step in range(3):
            for ours, reference in zip(observers, references, strict=True):
                ours(x * (step + 1))
                reference(x * (step + 1))
                buffer = _launch.workspace(x.device, "aminmax_tickets", 1, torch.int64)
                assert tickets is None or buffer is tickets
                tickets = buffer
                assert torch.count_nonzero(tickets) == 0
    for ours, reference in zip(observers, references, strict=True):
        torch.testing.assert_close(ours.min_val, reference.min_val, atol=0, rtol=0)
        torch.testing.assert_close(ours.max_val, reference.max_val, atol=0, rtol=0)


@pytest.mark.parametrize("case", MIN_MAX, ids=_id)
def test_buffers_keep_their_identity(backend, case):
    observer = _make(tritonobs, case)
    before = {name: id(getattr(observer, name)) for name in BUFFERS}
    for x in _batches():
        observer(x)
        assert {name: id(getattr(observer, name)) for name in BUFFERS} == before
    observer.reset_min_max_vals()
    observer(_batches()[0])
    assert {name: id(getattr(observer, name)) for name in BUFFERS} == before


@pytest.mark.parametrize("case", MIN_MAX, ids=_id)
def test_data_parallel_replica_updates_the_original(backend, case):
    """nn.DataParallel runs replicas that share the buffers; torch.ao's observers fill the original."""
    ours, reference = _make(tritonobs, case), _make(ao, case)
    x = _batches()[0]
    ours._replicate_for_data_parallel()(x)
    reference._replicate_for_data_parallel()(x)
    assert ours.min_val.shape == reference.min_val.shape
    torch.testing.assert_close(ours.min_val, reference.min_val, atol=0, rtol=0)
    torch.testing.assert_close(ours.max_val, reference.max_val, atol=0, rtol=0)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("case", MIN_MAX, ids=_id)
def test_compiled_forward_updates_the_same_buffers(backend, case, compile_backend):
    torch._dynamo.reset()
    counters.clear()
    observer = _make(tritonobs, case)
    eager = copy.deepcopy(observer)
    before = {name: id(getattr(observer, name)) for name in BUFFERS}
    compiled = torch.compile(observer, backend=compile_backend, fullgraph=True)
    for x in _batches():
        compiled(x)
        eager(x)
    assert dict(counters["graph_break"]) == {}
    assert {name: id(getattr(observer, name)) for name in BUFFERS} == before
    for name in BUFFERS:
        torch.testing.assert_close(getattr(observer, name), getattr(eager, name), atol=0, rtol=0)
