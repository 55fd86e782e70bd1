"""CUDA checks, run by ``benchmarks/gpu_check.sh`` with the real Triton compiler.

* every ``tritonobs::*`` op's compiled Triton kernel against its torch reference (on CPU copies),
  on shapes too large for the interpreter;
* every observer forward and op launch of this file under ``torch.cuda.set_sync_debug_mode("error")``
  (the ``forward`` fixture: a host sync raises), the observers' state and qparams compared with
  torch.ao;
* the per-tensor min/max of an fp16 tensor of more than 2**31 elements (~4 GiB) against
  ``torch.aminmax``, exactly;
* the cross-program handoff (partials, tickets) under stress: 300 back-to-back launches over
  inputs that spread one or two tiles over each of many programs, each result compared bitwise
  with the torch reference;
* a CUDA-graph capture of each observer's in-place forward, replayed 100 times on new batches,
  against eager, the buffers the same tensors throughout;
* the kernels a steady forward launches, counted by the profiler (1 per min/max observer, 3 per
  HistogramObserver), and a forward on ``cuda:1`` while ``cuda:0`` is current (two GPUs only);
* the CUDA timing harness of ``tritonobs.bench`` (event windows, host us, graph replay).

Marked ``gpu`` and skipped without CUDA, and on CUDA while ``TRITON_INTERPRET`` is on (the plain
test run interprets; ``gpu_check.sh`` turns it off). ``gpu_check.sh --dry-run`` sets
``TRITONOBS_GPU_CHECK_DRY_RUN=1``: the same tests then run on CPU through Triton's interpreter on
tiny shapes (fewer stress launches), without the sync-debug mode, and the tests that need CUDA
itself deselected (``benchmarks/gpu_check.py`` lists them). ``benchmarks/gpu_precompile.py`` reads
the shape constants below to compile, before the tests, every kernel variant they launch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.ao.quantization.observer as torch_ao_observer

import tritonobs
from tests.conftest import TOLERANCES
from tritonobs.backend import use_backend
from tritonobs.bench import Workload, copy_bandwidth_gbps, get_profile, make_input, measure, nbytes
from tritonobs.kernels.aminmax import plan_for
from tritonobs.ops.aminmax import aminmax_torch
from tritonobs.ops.aminmax_per_channel import aminmax_per_channel_torch
from tritonobs.ops.histc import histc_torch
from tritonobs.ops.histogram_rebin import histogram_rebin_torch
from tritonobs.ops.histogram_search import histogram_search_torch
from tritonobs.ops.histogram_update import histogram_update_torch
from tritonobs.ops.quantization_error import quantization_error_torch

DRY_RUN = os.environ.get("TRITONOBS_GPU_CHECK_DRY_RUN") == "1"


def _interpreting() -> bool:
    # Triton's own reading of the variable.
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {
        "1",
        "true",
        "on",
        "yes",
        "y",
    }


def _device() -> torch.device | None:
    if torch.cuda.is_available():
        return None if _interpreting() else torch.device("cuda")
    return torch.device("cpu") if DRY_RUN and _interpreting() else None


DEVICE = _device()
ON_CUDA = DEVICE is not None and DEVICE.type == "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE is None,
        reason="needs CUDA with TRITON_INTERPRET off (benchmarks/gpu_check.sh runs these)",
    ),
]

# Shapes: large enough on CUDA for many programs and ragged tiles, tiny under the interpreter.
SHAPES = [(4096, 4096), (3, 1000, 333)] if ON_CUDA else [(3, 4, 17)]
# The histogram tests' torch references are slow on 16M elements: they take the ~1M shape.
HISTOGRAM_SHAPES = SHAPES[-1:]
# bfloat16 is the awkward one for the interpreter (converted right after the load).
DTYPES = [torch.float32, torch.bfloat16, torch.float16] if ON_CUDA else [torch.bfloat16]
# CUDA-graph replays of each observer's captured forward.
REPLAYS = 100
# Over 2**31 elements of fp16 (~4 GiB): int64 offsets end to end.
BIG_NUMEL = 2**31 + 2**20 + 3
# Handoff stress: (shape, ch_axis) of inputs whose tiles spread over many programs (one or two
# tiles each), launched back to back without a sync.
STRESS_INPUTS: list[tuple[tuple[int, ...], int | None]] = (
    [((4_325_453,), None), ((6, 700_001), 0), ((3001, 1027), -1)]
    if ON_CUDA
    else [((65_539,), None), ((2, 65_541), 0)]
)
STRESS_LAUNCHES = 300 if ON_CUDA else 6

OBSERVERS: list[tuple[str, dict[str, Any]]] = [
    ("MinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {}),
    ("PerChannelMinMaxObserver", {"ch_axis": 0}),
    ("PerChannelMinMaxObserver", {"ch_axis": -1}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": 0}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": -1}),
    ("HistogramObserver", {}),
]


def observer_id(observer: tuple[str, dict[str, Any]]) -> str:
    name, kwargs = observer
    return name + "".join(f"-{k}{v}" for k, v in kwargs.items())


@pytest.fixture(autouse=True)
def triton_kernels() -> Iterator[None]:
    """The ops run their Triton launchers (compiled on CUDA, interpreted in the dry run)."""
    with use_backend("triton"):
        yield


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Any host synchronization inside the block raises (CUDA only: a no-op on CPU)."""
    if not ON_CUDA:
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.fixture
def forward() -> Callable[..., Any]:
    """Calls ``fn(*args)``, an observer's forward or an op's launch, with any host sync raising."""

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        with no_host_sync():
            return fn(*args)

    return call


def batches(shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    """Three batches on DEVICE: LLM-like; heavy-tailed over a wider range; the first with a NaN,
    a +inf and a -inf written into it."""
    first = make_input("llm", shape, dtype, DEVICE, seed=1)
    wider = make_input("student_t", shape, dtype, DEVICE, seed=2) * 300
    poisoned = first.clone().reshape(-1)
    poisoned[[0, poisoned.numel() // 2, -1]] = torch.tensor(
        [float("nan"), float("inf"), float("-inf")], dtype=dtype, device=DEVICE
    )
    return [first, wider, poisoned.reshape(shape)]


def assert_same_state(got: torch.nn.Module, expected: torch.nn.Module, name: str) -> None:
    """min/max exactly; a re-binned histogram within its tolerance."""
    for buf in ("min_val", "max_val"):
        torch.testing.assert_close(
            getattr(got, buf).cpu(), getattr(expected, buf).cpu(), atol=0, rtol=0
        )
    if name == "HistogramObserver":
        torch.testing.assert_close(
            got.histogram.cpu(), expected.histogram.cpu(), **TOLERANCES["histogram_rebinned"]
        )


def assert_same_qparams(got: torch.nn.Module, expected: torch.nn.Module, name: str) -> None:
    scale, zero_point = got.calculate_qparams()
    ref_scale, ref_zero_point = expected.calculate_qparams()
    if name == "HistogramObserver":
        torch.testing.assert_close(scale.cpu(), ref_scale.cpu(), **TOLERANCES["histogram_scale"])
        torch.testing.assert_close(
            zero_point.cpu(),
            ref_zero_point.cpu(),
            check_dtype=False,
            **TOLERANCES["histogram_zero_point"],
        )
    else:
        torch.testing.assert_close(scale.cpu(), ref_scale.cpu(), atol=0, rtol=0)
        torch.testing.assert_close(zero_point.cpu(), ref_zero_point.cpu(), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES[:2], ids=str)
@pytest.mark.parametrize("observer", OBSERVERS, ids=observer_id)
def test_forward_has_no_host_sync_and_matches_torch_ao(observer, dtype, forward):
    name, kwargs = observer
    data = batches(SHAPES[-1], dtype)
    if ON_CUDA:
        # Load the kernels on another instance first: the check is about forward, not the JIT.
        warm = getattr(tritonobs, name)(**kwargs).to(DEVICE)
        for x in data:
            forward(warm, x)

    obs = getattr(tritonobs, name)(**kwargs).to(DEVICE)
    forward(obs, data[0])
    forward(obs, data[1])
    # torch.ao, on CPU, sees the same two clean batches (the second widens the range), in float32
    # as tritonobs reads them (torch.ao would bin bfloat16 in bfloat16).
    ao = getattr(torch_ao_observer, name)(**kwargs)
    ao(data[0].cpu().float())
    ao(data[1].cpu().float())
    assert_same_state(obs, ao, name)
    assert_same_qparams(obs, ao, name)

    # torch.ao lets NaN/inf through; tritonobs skips and counts them: compare with tritonobs'
    # torch reference on CPU fed the same three batches.
    forward(obs, data[2])
    with use_backend("torch"):
        reference = getattr(tritonobs, name)(**kwargs)
        for x in data:
            reference(x.cpu())
    assert_same_state(obs, reference, name)
    assert int(obs.nonfinite_count) == 3


@pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need CUDA")
@pytest.mark.parametrize("observer", OBSERVERS, ids=observer_id)
def test_cuda_graph_replay_matches_eager(observer, forward):
    name, kwargs = observer
    data = batches(SHAPES[-1], torch.bfloat16)
    graphed = getattr(tritonobs, name)(**kwargs).to(DEVICE)
    eager = getattr(tritonobs, name)(**kwargs).to(DEVICE)
    static_x = data[0].clone()
    # The first batch runs eagerly on a side stream (kernels compile, per-channel buffers take
    # their [C] shape), as torch.cuda.graphs asks of a warm-up.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        forward(graphed, static_x)
    torch.cuda.current_stream().wait_stream(side)
    forward(eager, data[0])

    buffers = {key: id(value) for key, value in graphed.named_buffers()}
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward(graphed, static_x)
    # The in-place forward replays on the buffers captured: REPLAYS batches, the poisoned one
    # (NaN, +inf, -inf) every second time.
    for step in range(REPLAYS):
        x = data[1 + step % 2]
        static_x.copy_(x)
        graph.replay()
        forward(eager, x)
    torch.cuda.synchronize()
    assert {key: id(value) for key, value in graphed.named_buffers()} == buffers
    assert_same_state(graphed, eager, name)
    assert int(graphed.nonfinite_count) == int(eager.nonfinite_count) == 3 * (REPLAYS // 2)


@pytest.mark.skipif(not ON_CUDA, reason="counts CUDA kernels with the profiler")
@pytest.mark.parametrize("observer", OBSERVERS, ids=observer_id)
def test_steady_forward_launches(observer, forward):
    """One kernel per min/max forward, at most three per histogram forward (range not growing),
    counted by the profiler on the device."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    name, kwargs = observer
    x = batches(SHAPES[-1], torch.bfloat16)[0]
    obs = getattr(tritonobs, name)(**kwargs).to(DEVICE)
    forward(obs, x)
    forward(obs, x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward(obs, x)
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
    assert len(kernels) == (3 if name == "HistogramObserver" else 1), kernels


@pytest.mark.skipif(not ON_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("observer", OBSERVERS, ids=observer_id)
def test_forward_runs_on_the_inputs_device(observer, forward):
    """An observer on cuda:1 while cuda:0 is current: the kernels run where the tensors are."""
    name, kwargs = observer
    second = torch.device("cuda", 1)
    data = [x.to(second) for x in batches(SHAPES[-1], torch.float32)]
    with torch.cuda.device(0):
        obs = getattr(tritonobs, name)(**kwargs).to(second)
        for x in data:
            forward(obs, x)
    with use_backend("torch"):
        reference = getattr(tritonobs, name)(**kwargs)
        for x in data:
            reference(x.cpu())
    assert_same_state(obs, reference, name)


def copies(state: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Copies of a running state on ``device`` (an op updates them in place)."""
    return tuple(t.to(device, copy=True) for t in state)


def unset(channels: int | None) -> tuple[torch.Tensor, ...]:
    """A CPU running state that has seen nothing: (+inf, -inf, 0 skipped), 0-d or ``[C]``."""
    shape = () if channels is None else (channels,)
    inf = torch.full(shape, float("inf"))
    return inf, -inf, torch.zeros((), dtype=torch.int64)


@pytest.mark.parametrize("averaging_constant", [None, 0.01])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_aminmax_kernel_matches_reference(shape, dtype, averaging_constant, forward):
    first, wider, poisoned = batches(shape, dtype)
    state = unset(None)
    aminmax_torch(first.cpu(), *state, averaging_constant)
    for x in (wider, poisoned, wider.transpose(0, -1)):
        got = copies(state, DEVICE)
        forward(torch.ops.tritonobs.aminmax, x, *got, averaging_constant)
        expected = copies(state, torch.device("cpu"))
        aminmax_torch(x.cpu(), *expected, averaging_constant)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g.cpu(), e, atol=0, rtol=0)


@pytest.mark.parametrize("averaging_constant", [None, 0.01])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_aminmax_per_channel_kernel_matches_reference(shape, dtype, averaging_constant, forward):
    first, wider, poisoned = batches(shape, dtype)
    cpu = torch.device("cpu")
    for ch_axis in [*range(len(shape)), -1]:
        state = unset(shape[ch_axis])
        aminmax_per_channel_torch(first.cpu(), ch_axis, *state, averaging_constant)
        # A permuted (non-contiguous) view too, channel axis moved.
        for x in (wider, poisoned, wider.transpose(0, -1)):
            start = state if x.shape == first.shape else unset(x.shape[ch_axis])
            got = copies(start, DEVICE)
            forward(torch.ops.tritonobs.aminmax_per_channel, x, ch_axis, *got, averaging_constant)
            expected = copies(start, cpu)
            aminmax_per_channel_torch(x.cpu(), ch_axis, *expected, averaging_constant)
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g.cpu(), e, atol=0, rtol=0)


@pytest.mark.parametrize("bins", [256, 2048])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", HISTOGRAM_SHAPES, ids=str)
def test_histc_kernel_matches_reference(shape, dtype, bins, forward):
    _, wider, poisoned = batches(shape, dtype)
    for x in (wider, poisoned):
        finite = x.float()[torch.isfinite(x.float())]
        full = torch.aminmax(finite)
        narrow = (full[0] / 4, full[1] / 4)
        for lo, hi in (full, narrow):
            got = forward(torch.ops.tritonobs.histc, x, lo, hi, bins)
            expected = histc_torch(x.cpu(), lo.cpu(), hi.cpu(), bins)
            torch.testing.assert_close(got.cpu(), expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", HISTOGRAM_SHAPES, ids=str)
def test_histogram_update_and_rebin_kernels_match_reference(shape, dtype, forward):
    first, wider, poisoned = batches(shape, dtype)
    bins, upsample_rate = 2048, 16
    state = [
        torch.zeros(bins),
        torch.tensor(float("inf")),
        torch.tensor(float("-inf")),
        torch.zeros((), dtype=torch.int64),
    ]
    for step, x in enumerate((first, first, wider, poisoned)):
        # Both update their own copy of the same state in place.
        got = [s.to(DEVICE, copy=True) for s in state]
        forward(torch.ops.tritonobs.histogram_update, x, *got, upsample_rate)
        histogram_update_torch(x.cpu(), *state, upsample_rate)
        grown = step >= 2
        hist_tol = TOLERANCES["histogram_rebinned"] if grown else {"atol": 0, "rtol": 0}
        torch.testing.assert_close(got[0].cpu(), state[0], **hist_tol)
        for g, e in zip(got[1:], state[1:], strict=True):
            torch.testing.assert_close(g.cpu(), e, atol=0, rtol=0)

    histogram, lo, hi, _ = state
    new_lo, new_hi = lo - (hi - lo) / 3, hi + (hi - lo) / 2
    got = torch.ops.tritonobs.histogram_rebin(
        histogram.to(DEVICE), lo.to(DEVICE), hi.to(DEVICE), new_lo.to(DEVICE), new_hi.to(DEVICE), 16
    )
    expected = histogram_rebin_torch(histogram, lo, hi, new_lo, new_hi, 16)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES["histogram_rebinned"])


@pytest.mark.parametrize("data", ["llm", "student_t", "relu", "normal"])
def test_histogram_search_and_error_sweep_kernels_match_reference(data):
    ao = torch_ao_observer.HistogramObserver()
    for seed in range(3):
        ao(make_input(data, SHAPES[-1], torch.float32, torch.device("cpu"), seed))
    args = (ao.histogram, ao.min_val, ao.max_val)
    on_device = tuple(a.to(DEVICE) for a in args)

    got = torch.ops.tritonobs.histogram_search(*on_device, ao.dst_nbins)
    expected = histogram_search_torch(*args, ao.dst_nbins)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, atol=0, rtol=0)

    # Candidate ranges shrinking from both ends (fewer under the interpreter).
    start = torch.arange(0, 1000, 7 if ON_CUDA else 97)
    end = ao.bins - 1 - start.flip(0)
    got = torch.ops.tritonobs.quantization_error(
        *on_device, start.to(DEVICE), end.to(DEVICE), ao.dst_nbins
    )
    expected = quantization_error_torch(*args, start, end, ao.dst_nbins)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES["quantization_error"])


@pytest.mark.skipif(not ON_CUDA, reason="~4 GiB on the device")
def test_aminmax_over_2_31_elements_matches_torch(forward):
    """fp16, more than 2**31 elements: the extremes sit past element 2**31, so only int64
    offsets find them; compared with ``torch.aminmax`` exactly."""
    x = torch.empty(BIG_NUMEL, dtype=torch.float16, device=DEVICE).normal_()
    x[2**31 + 7] = -60000.0
    x[-2] = 49152.0
    state = copies(unset(None), DEVICE)
    forward(torch.ops.tritonobs.aminmax, x, *state, None)
    expected = torch.aminmax(x)
    assert state[0].item() == expected.min.item() == -60000.0
    assert state[1].item() == expected.max.item() == 49152.0
    assert state[2].item() == 0


def test_aminmax_handoff_stress_is_bitwise_exact(forward):
    """Back-to-back launches whose programs each reduce one or two tiles and hand their partials
    to the block's last program (ticket drawn, then reset for the next launch): every launch's
    result equals the torch reference bit for bit."""
    sms = torch.cuda.get_device_properties(DEVICE).multi_processor_count if ON_CUDA else 1
    inputs, references = [], []
    for index, (shape, ch_axis) in enumerate(STRESS_INPUTS):
        x = make_input("student_t", shape, torch.bfloat16, DEVICE, seed=10 + index)
        if index == 0:
            x[[5, -3]] = torch.tensor([float("nan"), float("-inf")], dtype=x.dtype, device=DEVICE)
        plan = plan_for(x, ch_axis)
        assert plan.constexprs["MULTI_SPLIT"] and plan.grid[0] >= 2 * sms, plan
        channels = None if ch_axis is None else shape[ch_axis]
        reference = unset(channels)
        if ch_axis is None:
            aminmax_torch(x.cpu(), *reference, None)
        else:
            aminmax_per_channel_torch(x.cpu(), ch_axis, *reference, None)
        inputs.append((x, ch_axis, channels))
        references.append(reference)

    # Fresh states made first, so that nothing but the launches runs between them.
    results = [
        copies(unset(inputs[step % len(inputs)][2]), DEVICE) for step in range(STRESS_LAUNCHES)
    ]
    for step, state in enumerate(results):
        x, ch_axis, _ = inputs[step % len(inputs)]
        if ch_axis is None:
            forward(torch.ops.tritonobs.aminmax, x, *state, None)
        else:
            forward(torch.ops.tritonobs.aminmax_per_channel, x, ch_axis, *state, None)
    for step, state in enumerate(results):
        for got, expected in zip(state, references[step % len(inputs)], strict=True):
            assert torch.equal(got.cpu(), expected), f"launch {step}"


@pytest.mark.skipif(not ON_CUDA, reason="times with CUDA events")
def test_cuda_timing_harness():
    """tritonobs.bench's CUDA timing: per-call event times, host us apart, a graph replay."""
    profile = get_profile("gpu_check")
    x = make_input("llm", (4096, 4096), torch.bfloat16, DEVICE, seed=3)
    obs = tritonobs.MinMaxObserver().to(DEVICE)
    timing = measure(Workload(obs, lambda: (x,)), DEVICE, profile, graph=True)
    assert timing.calls > 1 and len(timing.times_ms) >= profile.min_rounds
    assert all(t > 0 for t in timing.times_ms)
    assert timing.host_us is not None and timing.host_us > 0
    assert timing.graph_error is None and timing.graph_ms is not None and timing.graph_ms > 0
    assert copy_bandwidth_gbps(DEVICE, profile, nbytes(x)) > 0
