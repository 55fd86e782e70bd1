"""HistogramObserver's CUDA code path, proven on CPU tensors: three launches and no torch kernel per
forward, the input's device, buffers updated in place, cached plans, workspaces left zeroed.

Triton launches are stubbed (``tritonobs.hostpath``) where only the host side is under test; the
tests that check values run the kernels under the interpreter.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch._dynamo
import torch.ao.quantization.observer as ao
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

import tritonobs
from tests.program_order import shuffled_programs
from tritonobs.backend import use_backend
from tritonobs.hostpath import count_launches, stub_triton_launches
from tritonobs.kernels import _launch
from tritonobs.kernels import histc as histc_kernels
from tritonobs.kernels import histogram_rebin as rebin_kernels
from tritonobs.kernels import histogram_update as kernel

pytestmark = pytest.mark.interpret

EXACT = {"atol": 0, "rtol": 0}
LAUNCHES = ("_histogram_stats_kernel", "_histogram_regrow_kernel", "_histogram_update_kernel")
BUFFERS = ("histogram", "min_val", "max_val", "nonfinite_count")
# Scratch the Triton path keeps between forwards: zero whenever no forward is running.
ZEROED = (("histogram_update_counts", torch.int64), ("histogram_rebin_acc", torch.float64))


def batches(n: int = 4, shape=(6, 5, 7)) -> list[torch.Tensor]:
    """The range grows on every other batch (the first batch initialises it)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g) * (1 + i // 2) for i in range(n)]


def observer_after_one_batch(x: torch.Tensor, **kwargs) -> tritonobs.HistogramObserver:
    """An observer that has seen ``x`` (torch backend), with the Triton plan and workspaces for
    ``x``'s size made (one stubbed forward: their first allocation is not a steady-state cost)."""
    observer = tritonobs.HistogramObserver(**kwargs)
    with use_backend("torch"):
        observer(x)
    with use_backend("triton"), stub_triton_launches():
        copy.deepcopy(observer)(x)
    return observer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bins", [2048, 37, 5000])
def test_steady_forward_is_three_triton_launches_and_no_torch_kernel(dtype, bins):
    x = torch.randn(33, 17, 9).to(dtype)
    observer = observer_after_one_batch(x, bins=bins)
    with use_backend("triton"):
        count = count_launches(lambda: observer(x))
    assert count.triton == LAUNCHES
    assert count.torch == ()
    assert count.syncs == 0


@pytest.mark.parametrize("case", ["first_batch", "range_grows", "transposed"])
def test_every_forward_is_the_same_three_launches(case):
    """The host never knows whether the range grows (no sync): a growing range, the first batch and
    a dense transposed input launch the same three kernels and nothing else."""
    x = torch.randn(12, 31)
    observer = observer_after_one_batch(x)
    if case == "first_batch":
        observer = tritonobs.HistogramObserver()
    batch = {"first_batch": x, "range_grows": x * 3, "transposed": x.t()}[case]
    with use_backend("triton"):
        count = count_launches(lambda: observer(batch))
    assert (count.triton, count.torch, count.syncs) == (LAUNCHES, (), 0)


def test_input_with_gaps_is_copied_once():
    x = torch.randn(12, 31)[:, ::2]
    observer = observer_after_one_batch(x)
    with use_backend("triton"):
        count = count_launches(lambda: observer(x))
    assert count.triton == LAUNCHES
    assert count.torch == ("aten::copy_",)


def test_float64_buffers_round_trip_through_float32():
    """factory_kwargs dtype=float64: the same three launches on float32 copies, then copies back."""
    x = torch.randn(12, 31)
    observer = observer_after_one_batch(x, factory_kwargs={"dtype": torch.float64})
    with use_backend("triton"):
        count = count_launches(lambda: observer(x))
    assert count.triton == LAUNCHES
    assert sorted(count.torch) == ["aten::copy_"] * 6


def test_steady_forward_allocates_nothing():
    x = torch.randn(40, 50)
    observer = observer_after_one_batch(x)
    with use_backend("triton"), stub_triton_launches():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            observer(x)
    allocations = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::zeros"}
    assert not {event.name for event in prof.events()} & allocations


def test_host_code_uses_no_triton_integer_helpers(monkeypatch):
    """``triton.cdiv``/``triton.next_power_of_2`` cost ~12 us a host call in Triton 3.9."""
    import triton

    def forbidden(*args):
        raise AssertionError("triton.cdiv/next_power_of_2 called on the host")

    monkeypatch.setattr(triton, "cdiv", forbidden)
    monkeypatch.setattr(triton, "next_power_of_2", forbidden)
    monkeypatch.setattr(kernel, "_PLANS", {})
    x = torch.randn(9, 13)
    scalars = (torch.tensor(-1.0), torch.tensor(1.0))
    with use_backend("triton"), stub_triton_launches() as launches:
        tritonobs.HistogramObserver(bins=100)(x)
        torch.ops.tritonobs.histc(x, *scalars, 77)
        torch.ops.tritonobs.histogram_rebin(torch.ones(33), *scalars, *scalars, 16)
    assert len(launches) == 3 + 2 + 2


def test_plan_is_computed_once_per_size(monkeypatch):
    calls = []
    real = kernel._plan

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(kernel, "_PLANS", {})
    monkeypatch.setattr(kernel, "_plan", counting)
    observer = tritonobs.HistogramObserver(bins=64)
    x = torch.randn(6, 5, 7)
    with use_backend("triton"), stub_triton_launches():
        for _ in range(3):
            observer(x)
            observer(x.transpose(0, 2))  # same size, read in place
            observer(x[:3])
    device = x.device
    assert calls == [(210, device, 64, 16), (105, device, 64, 16)]


def test_every_launch_runs_under_the_inputs_device(monkeypatch):
    """Triton launches on the current device: each launcher enters the input's device around its
    launches (observer forward, histc, histogram_rebin)."""
    entered: list[tuple[torch.device, int, int]] = []
    x = torch.randn(9, 13)
    scalars = (torch.tensor(-1.0), torch.tensor(1.0))
    with use_backend("triton"), stub_triton_launches() as launches:

        @contextlib.contextmanager
        def recording(device):
            start = len(launches)
            with _launch.device_guard(device):
                yield
            entered.append((device, start, len(launches)))

        for module in (kernel, histc_kernels, rebin_kernels):
            monkeypatch.setattr(module, "device_guard", recording)
        tritonobs.HistogramObserver(bins=50)(x)
        torch.ops.tritonobs.histc(x, *scalars, 77)
        torch.ops.tritonobs.histogram_rebin(torch.ones(33), *scalars, *scalars, 16)
    assert entered == [(x.device, 0, 3), (x.device, 3, 5), (x.device, 5, 7)]
    assert len(launches) == 7


def test_launches_pin_fp_fusion_off():
    x = torch.randn(9, 13)
    scalars = (torch.tensor(-1.0), torch.tensor(1.0))
    with use_backend("triton"), stub_triton_launches() as launches:
        tritonobs.HistogramObserver(bins=50)(x)
        torch.ops.tritonobs.histc(x, *scalars, 77)
        torch.ops.tritonobs.histogram_rebin(torch.ones(33), *scalars, *scalars, 16)
    assert [launch.kwargs["enable_fp_fusion"] for launch in launches] == [False] * 7


def assert_workspaces_zeroed(device: torch.device) -> None:
    for name, dtype in ZEROED:
        buffer = _launch.workspace(device, name, 1, dtype)
        assert torch.count_nonzero(buffer) == 0, name


def test_workspaces_are_zero_after_every_forward():
    """First batch, steady, growing range, NaN/inf, no finite value: the counters are back to 0."""
    x = torch.randn(30, 41)
    poisoned = x.clone()
    poisoned[::3, ::5] = float("nan")
    poisoned[1, 1] = float("inf")
    observer = tritonobs.HistogramObserver(bins=300)
    with use_backend("triton"):
        for batch in (x, x * 0.5, x * 2, poisoned * 3, torch.full((4,), float("nan"))):
            observer(batch)
            assert_workspaces_zeroed(x.device)
        torch.ops.tritonobs.histogram_rebin(
            observer.histogram, observer.min_val, observer.max_val, observer.min_val - 1,
            observer.max_val + 1, 16,
        )  # fmt: skip
        assert_workspaces_zeroed(x.device)


def test_interleaved_observers_match_each_alone():
    """Two observers share the per-device workspaces: fed in turn, each ends as it would alone."""
    stream_a, stream_b = batches(4, (7, 33)), [x.flip(0) * 2 + 1 for x in batches(4, (5, 9))]
    kwargs_a, kwargs_b = {"bins": 64}, {"bins": 200}
    alone = []
    with use_backend("triton"):
        for stream, kwargs in ((stream_a, kwargs_a), (stream_b, kwargs_b)):
            observer = tritonobs.HistogramObserver(**kwargs)
            for x in stream:
                observer(x)
            alone.append(observer)
        together = [
            tritonobs.HistogramObserver(**kwargs_a),
            tritonobs.HistogramObserver(**kwargs_b),
        ]
        for xa, xb in zip(stream_a, stream_b, strict=True):
            together[0](xa)
            together[1](xb)
    for ours, reference in zip(together, alone, strict=True):
        for name in BUFFERS:
            torch.testing.assert_close(getattr(ours, name), getattr(reference, name), **EXACT)


def test_buffers_keep_their_identity(backend):
    observer = tritonobs.HistogramObserver(bins=40)
    before = {
        name: (id(getattr(observer, name)), getattr(observer, name).data_ptr()) for name in BUFFERS
    }
    for x in batches():
        observer(x)
        now = {
            name: (id(getattr(observer, name)), getattr(observer, name).data_ptr())
            for name in BUFFERS
        }
        assert now == before


def test_data_parallel_replica_updates_the_original(backend):
    """nn.DataParallel runs replicas sharing the buffers; torch.ao's observer fills the original."""
    ours, reference = tritonobs.HistogramObserver(bins=32), ao.HistogramObserver(bins=32)
    x = batches()[0]
    ours._replicate_for_data_parallel()(x)
    reference._replicate_for_data_parallel()(x)
    for name in ("histogram", "min_val", "max_val"):
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), **EXACT)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compiled_forward_updates_the_same_buffers(backend, compile_backend):
    torch._dynamo.reset()
    counters.clear()
    observer = tritonobs.HistogramObserver(bins=48)
    eager = copy.deepcopy(observer)
    before = {name: id(getattr(observer, name)) for name in BUFFERS}
    compiled = torch.compile(observer, backend=compile_backend, fullgraph=True)
    for x in batches():
        compiled(x)
        eager(x)
    assert dict(counters["graph_break"]) == {}
    assert {name: id(getattr(observer, name)) for name in BUFFERS} == before
    for name in BUFFERS:
        torch.testing.assert_close(getattr(observer, name), getattr(eager, name), **EXACT)


def _forward_from(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One Triton forward from a copy of ``state``, with the plan's scratch poisoned first: a
    program that read a partial or the decision before its writer ran would show."""
    observer = tritonobs.HistogramObserver(bins=state["histogram"].numel())
    for name in BUFFERS:
        getattr(observer, name).copy_(state[name])
    plan = kernel.plan_for(x.numel(), x.device, observer.bins, observer.upsample_rate)
    for scratch in (plan.part_min, plan.part_max, plan.decision):
        scratch.fill_(float("nan"))
    plan.part_nonfinite.fill_(-999)
    with use_backend("triton"):
        observer(x)
    return {name: getattr(observer, name).clone() for name in BUFFERS}


@pytest.mark.parametrize("case", ["first_batch", "steady", "range_grows", "nonfinite"])
def test_forward_is_independent_of_program_order(case):
    """Programs of a launch hand work to each other only through launch boundaries: shuffled
    program orders give bit-identical buffers (several programs per launch: 4 tiles of x, 3 blocks
    of old bins)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7001, generator=g)
    start = tritonobs.HistogramObserver(bins=300)
    if case != "first_batch":
        start(torch.randn(7001, generator=g) * 2)
    state = {name: getattr(start, name).clone() for name in BUFFERS}
    batch = {"first_batch": x, "steady": x, "range_grows": x * 4, "nonfinite": x * 4}[case]
    if case == "nonfinite":
        batch = batch.clone()
        batch[::97] = float("nan")
        batch[5::211] = float("-inf")
    expected = _forward_from(state, batch)
    assert kernel.plan_for(batch.numel(), batch.device, 300, 16).regrow_grid == (4 + 3,)
    for seed in (1, 2):
        with shuffled_programs(seed) as grids:
            got = _forward_from(state, batch)
        assert grids and max(grids) > 1
        for name in BUFFERS:
            assert torch.equal(got[name], expected[name]), (seed, name)
