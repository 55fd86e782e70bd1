"""Benchmark harness shared by ``benchmarks/``, ``tritonobs bench`` and ``benchmarks/gpu_check.sh``.

One harness times every provider of a workload the same way and records, in pytest-benchmark's
``extra_info``: device and versions, bytes moved, GB/s, the device copy bandwidth measured in the
same run and the fraction of it reached, and the speedup over torch.ao (also measured in the same
run). Inputs rotate through enough distinct tensors that a cache cannot serve them.

On CUDA (:func:`measure`) a round is many back-to-back calls between two CUDA events, queued while
a ``torch.cuda._sleep`` holds the GPU, so that the host's planning and launching (and each call's
``setup``) stay outside the event window; the device work of ``setup`` (a state restore) is timed
alone the same way and subtracted. A workload's time is the median round, per call. The host's
cost of a call is timed apart, on the host clock (``host_us``), and the same calls are captured
once in a CUDA graph and replayed between two events (``graph_ms``) where capture works. The copy
bandwidth is that of ``y.copy_(x)`` over the workload's bytes, timed the same way in the same run.
On CPU rounds are single calls timed with ``time.perf_counter`` and the time is the fastest round
(see :data:`STATISTIC`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

DATA_KINDS: tuple[str, ...] = ("llm", "student_t", "relu", "normal")
PROVIDERS: tuple[str, ...] = ("torch.ao", "tritonobs", "torch.compile")
BASELINE = "torch.ao"

_MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a benchmark run covers and how long it measures.

    Attributes:
        name: profile name (``cuda``, ``cpu``, ``tiny``, ``gpu_check``, ``gpu_check_dry``).
        sizes: input shapes.
        dtypes: input dtypes.
        data_kinds: input distributions (see :func:`make_input`).
        providers: implementations compared.
        compile_backend: ``torch.compile`` backend of the ``torch.compile`` provider.
        target_s: measuring time aimed at per workload (rounds = target_s / one call).
        min_rounds: fewest timed rounds.
        max_rounds: most timed rounds.
        rotate_bytes: inputs rotate through at least this many bytes (2 to 8 tensors).
        copy_bytes: size of the buffer whose copy measures the device bandwidth.
        stream_batches: batches a calculate_qparams benchmark observes before it is timed.
        tiny: a smoke profile (fewer candidate ranges in the search benchmarks, and so on).
        cpu_threads: ``torch.set_num_threads`` for the run (``None``: torch's default).
    """

    name: str
    sizes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    data_kinds: tuple[str, ...]
    providers: tuple[str, ...]
    compile_backend: str
    target_s: float
    min_rounds: int
    max_rounds: int
    rotate_bytes: int
    copy_bytes: int
    stream_batches: int
    tiny: bool
    cpu_threads: int | None = None

    def rounds(self, round_ms: float) -> int:
        """Timed rounds for a round of ``round_ms``: ``target_s`` worth, within the bounds."""
        return min(self.max_rounds, max(self.min_rounds, int(self.target_s * 1e3 / round_ms)))


_BOTH_DTYPES = (torch.float32, torch.bfloat16)

_CPU = Profile(
    # Sized to run in about ten minutes on 2 cores: 1M and 4M elements, the LLM-like
    # and the heavy-tailed data.
    name="cpu",
    sizes=((1024, 1024), (4, 1024, 1024)),
    dtypes=_BOTH_DTYPES,
    data_kinds=("llm", "student_t"),
    providers=PROVIDERS,
    compile_backend="inductor",
    target_s=0.15,
    min_rounds=7,
    max_rounds=25,
    rotate_bytes=32 * _MIB,
    copy_bytes=256 * _MIB,
    stream_batches=4,
    tiny=False,
    # One intra-op thread: on a shared 2-core machine a two-thread op waits for its
    # descheduled second thread (whole scheduler ticks) in nearly every round.
    cpu_threads=1,
)

PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            name="cuda",
            sizes=((4096, 4096), (8192, 8192), (16, 4096, 4096)),
            dtypes=_BOTH_DTYPES,
            data_kinds=DATA_KINDS,
            providers=PROVIDERS,
            compile_backend="inductor",
            target_s=0.2,
            min_rounds=10,
            max_rounds=200,
            rotate_bytes=512 * _MIB,
            copy_bytes=1024 * _MIB,
            stream_batches=8,
            tiny=False,
        ),
        _CPU,
        # The cpu profile at two threads, torch's default on this machine (the CPU targets hold
        # at one and at two threads).
        dataclasses.replace(_CPU, name="cpu2", cpu_threads=2),
        # CI smoke run: every benchmark once on a tiny 3-d shape (distinct first and last axes),
        # in bfloat16 (the dtype torch.ao converts); "relu" has a one-sided range. The "eager"
        # compile backend still traces each reference with dynamo but skips code generation.
        Profile(
            name="tiny",
            sizes=((3, 4, 17),),
            dtypes=(torch.bfloat16,),
            data_kinds=("llm", "relu"),
            providers=PROVIDERS,
            compile_backend="eager",
            target_s=0.0,
            min_rounds=1,
            max_rounds=1,
            rotate_bytes=0,
            copy_bytes=_MIB,
            stream_batches=2,
            tiny=True,
        ),
        # The subset benchmarks/gpu_check.sh runs on an H200 (torch.compile would not fit in it).
        Profile(
            name="gpu_check",
            sizes=((8192, 8192),),
            dtypes=_BOTH_DTYPES,
            data_kinds=("llm", "student_t"),
            providers=("torch.ao", "tritonobs"),
            compile_backend="inductor",
            target_s=0.15,
            min_rounds=3,
            max_rounds=100,
            rotate_bytes=512 * _MIB,
            copy_bytes=1024 * _MIB,
            stream_batches=8,
            tiny=False,
        ),
        # gpu_check.sh --dry-run: the same benchmarks on one tiny CPU shape, dtype and data kind
        # (the Triton kernels run interpreted).
        Profile(
            name="gpu_check_dry",
            sizes=((3, 4, 17),),
            dtypes=(torch.bfloat16,),
            data_kinds=("student_t",),
            providers=("torch.ao", "tritonobs"),
            compile_backend="eager",
            target_s=0.0,
            min_rounds=1,
            max_rounds=1,
            rotate_bytes=0,
            copy_bytes=_MIB,
            stream_batches=2,
            tiny=True,
        ),
    )
}


def default_profile_name() -> str:
    """``TRITONOBS_BENCH_PROFILE`` if set, else ``cuda`` when a GPU is present, else ``cpu``."""
    name = os.environ.get("TRITONOBS_BENCH_PROFILE")
    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (``ValueError`` for an unknown one)."""
    if name not in PROFILES:
        raise ValueError(f"unknown benchmark profile {name!r}; one of {', '.join(PROFILES)}")
    return PROFILES[name]


def bench_device(profile: Profile) -> torch.device:
    """CUDA for the GPU profiles, CPU otherwise."""
    return torch.device("cuda" if profile.name in ("cuda", "gpu_check") else "cpu")


def providers(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the providers a benchmark supports (the profile's providers are intersected)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.bench_providers = names  # type: ignore[attr-defined]
        return fn

    return mark


def make_input(
    kind: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int
) -> torch.Tensor:
    """A tensor drawn from one of :data:`DATA_KINDS`, generated in float32 then cast to ``dtype``.

    * ``llm``: standard normal, with a few channels of the last axis (C/512, between 1 and 8)
      scaled by 100, the outlier channels of transformer activations;
    * ``student_t``: Student-t with 3 degrees of freedom (heavy tails);
    * ``relu``: ReLU of a standard normal (half the values are exactly 0);
    * ``normal``: standard normal.

    Args:
        kind: one of :data:`DATA_KINDS`.
        shape: the shape.
        dtype: the dtype returned.
        device: where to generate it.
        seed: the generator seed (a different seed gives a different tensor).

    Returns:
        The tensor, contiguous.
    """
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal() -> torch.Tensor:
        return torch.randn(tuple(shape), generator=gen, device=device)

    x = normal()
    if kind == "llm":
        channels = shape[-1]
        count = max(1, min(8, channels // 512))
        outliers = torch.randperm(channels, generator=gen, device=device)[:count]
        x[..., outliers] *= 100.0
    elif kind == "student_t":
        dof = 3
        chi2 = sum(normal().square() for _ in range(dof))
        x = x / (chi2 / dof).sqrt()
    elif kind == "relu":
        x = x.clamp_min(0.0)
    elif kind != "normal":
        raise ValueError(f"unknown data kind {kind!r}; one of {', '.join(DATA_KINDS)}")
    return x.to(dtype)


def rotating_inputs(
    kind: str,
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    profile: Profile,
    scale: float = 1.0,
) -> list[torch.Tensor]:
    """Distinct inputs whose total size reaches ``profile.rotate_bytes`` (2 to 8 tensors).

    Cycling through them keeps a workload from being served by a cache that held the last one.
    The last set is kept, so the providers of one case (benchmarked one after another) share it.
    """
    global _LAST_INPUTS
    key = (kind, tuple(shape), dtype, str(device), profile.name, scale)
    if _LAST_INPUTS is None or _LAST_INPUTS[0] != key:
        _LAST_INPUTS = None  # free the previous set before making the next
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        count = min(8, max(2, math.ceil(profile.rotate_bytes / max(size, 1))))
        inputs = [make_input(kind, shape, dtype, device, seed) * scale for seed in range(count)]
        _LAST_INPUTS = (key, inputs)
    return _LAST_INPUTS[1]


_LAST_INPUTS: tuple[tuple[Any, ...], list[torch.Tensor]] | None = None


class Cycle:
    """Round-robin over a list: ``next()`` returns the following item, forever."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)
        self.index = -1

    def next(self) -> Any:
        self.index = (self.index + 1) % len(self.items)
        return self.items[self.index]


def synchronize(device: torch.device) -> None:
    """Wait for the device (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Workload:
    """One thing to time, built for one provider.

    Attributes:
        fn: the call timed.
        setup: returns the positional arguments of the next call (not timed): the next rotating
            input, a restored observer state, ...
    """

    fn: Callable[..., Any]
    setup: Callable[[], tuple[Any, ...]]


def _timed_cpu(fn: Callable[..., Any], times_ms: list[float]) -> Callable[..., Any]:
    """``fn`` wrapped to append its duration (ms, host clock) to ``times_ms``."""

    def timed(*args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        times_ms.append((time.perf_counter() - start) * 1e3)
        return out

    return timed


@dataclasses.dataclass
class Timing:
    """What :func:`measure` found.

    Attributes:
        times_ms: one time per round, per call, in milliseconds.
        calls: calls per round (1 on CPU).
        host_us: the host's cost of one call (median, microseconds), its ``setup`` excluded; CUDA
            only (on CPU the whole call is host time).
        setup_ms: device time of one call's ``setup`` (subtracted from ``times_ms``); CUDA only.
        graph_ms: one call's time in a CUDA-graph replay of ``calls`` calls; ``None`` on CPU, when
            not asked for, or when capture failed (``graph_error`` says why).
        graph_error: why the capture failed.
        caught_up: rounds in which the GPU reached the window before the host had queued it (the
            hold was then lengthened; such a round may include host gaps).
    """

    times_ms: list[float]
    calls: int = 1
    host_us: float | None = None
    setup_ms: float | None = None
    graph_ms: float | None = None
    graph_error: str | None = None
    caught_up: int = 0


# CUDA windows: each aims at this much device time, with at most MAX_CALLS calls; the host cost is
# the median of HOST_CALLS calls.
WINDOW_S = 2e-3
MAX_CALLS = 200
HOST_CALLS = 20
# torch.cuda._sleep counts SM cycles; H100/H200 boost near 2 GHz, and a lower clock only makes the
# hold longer. The hold covers the host's queueing of a window twice over, plus a margin.
_CYCLES_PER_S = 2.0e9
_HOLD_MARGIN_S = 5e-4
_MAX_HOLD_S = 0.25


def _window(workload: Workload, calls: int, hold_s: float) -> tuple[float, bool]:
    """Total ms of ``calls`` back-to-back calls between two events, queued behind a GPU hold.

    Returns:
        The elapsed milliseconds, and whether the GPU had already reached the start event when the
        host finished queueing (the hold was too short).
    """
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(int(min(hold_s, _MAX_HOLD_S) * _CYCLES_PER_S))
    start.record()
    for _ in range(calls):
        workload.fn(*workload.setup())
    end.record()
    caught_up = start.query()
    end.synchronize()
    return start.elapsed_time(end), caught_up


def _graph_ms(workload: Workload, calls: int) -> tuple[float | None, str | None]:
    """ms of one replay of ``calls`` calls (and their setups) captured in a CUDA graph."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                workload.fn(*workload.setup())
    except RuntimeError as error:
        # Capture fails where a call synchronises with the host.
        torch.cuda.synchronize()
        return None, str(error).splitlines()[0]
    graph.replay()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    # Held, so that the graph's launch is queued before the window opens.
    torch.cuda._sleep(int(_HOLD_MARGIN_S * _CYCLES_PER_S))
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end), None


def _measure_cuda(
    workload: Workload, device: torch.device, profile: Profile, benchmark: Any | None, graph: bool
) -> Timing:
    with torch.cuda.device(device):
        workload.fn(*workload.setup())
        torch.cuda.synchronize()
        host_s, loop_s = [], []
        for _ in range(HOST_CALLS):
            begin = time.perf_counter()
            args = workload.setup()
            call = time.perf_counter()
            workload.fn(*args)
            done = time.perf_counter()
            host_s.append(done - call)
            loop_s.append(done - begin)
        torch.cuda.synchronize()
        per_call_host_s = statistics.median(loop_s)
        setup_only = Workload(lambda *args: None, workload.setup)

        def hold(calls: int) -> float:
            return 2 * calls * per_call_host_s + _HOLD_MARGIN_S

        one_ms = _window(workload, 1, hold(1))[0]
        calls = min(MAX_CALLS, max(1, math.ceil(WINDOW_S * 1e3 / max(one_ms, 1e-4))))
        setup_ms = _window(setup_only, calls, hold(calls))[0] / calls
        rounds = profile.rounds(max(calls * one_ms, 1e-4))
        timing = Timing(
            times_ms=[],
            calls=calls,
            host_us=statistics.median(host_s) * 1e6,
            setup_ms=setup_ms,
        )
        slack = 1.0

        def one_round() -> None:
            nonlocal slack
            total_ms, caught_up = _window(workload, calls, slack * hold(calls))
            if caught_up:
                timing.caught_up += 1
                slack *= 2
            timing.times_ms.append(max(total_ms / calls - setup_ms, 0.0))

        if benchmark is None:
            for _ in range(rounds):
                one_round()
        else:
            benchmark.pedantic(one_round, rounds=rounds)
        if graph:
            graph_total, timing.graph_error = _graph_ms(workload, calls)
            if graph_total is not None:
                timing.graph_ms = max(graph_total / calls - setup_ms, 0.0)
    return timing


def measure(
    workload: Workload,
    device: torch.device,
    profile: Profile,
    benchmark: Any | None = None,
    graph: bool = False,
) -> Timing:
    """Time ``workload``: a warm-up call, then rounds sized by ``profile.target_s``.

    Args:
        workload: what to time.
        device: where it runs (CUDA events there, ``perf_counter`` on CPU; see the module docs).
        profile: rounds and time per workload.
        benchmark: the pytest-benchmark fixture; its ``pedantic`` drives the rounds when given
            (a disabled fixture runs one call, and that one call is timed on the host clock).
        graph: on CUDA, also time a CUDA-graph replay of a round's calls.

    Returns:
        The :class:`Timing`.
    """
    times: list[float] = []
    if benchmark is not None and benchmark.disabled:
        benchmark.pedantic(_timed_cpu(workload.fn, times), setup=lambda: (workload.setup(), {}))
        return Timing(times)
    if device.type == "cuda":
        return _measure_cuda(workload, device, profile, benchmark, graph)
    timed = _timed_cpu(workload.fn, times)
    timed(*workload.setup())
    rounds = profile.rounds(max(times.pop(), 1e-6))
    if benchmark is None:
        for _ in range(rounds):
            timed(*workload.setup())
    else:
        benchmark.pedantic(timed, setup=lambda: (workload.setup(), {}), rounds=rounds)
    return Timing(times)


def measure_paired(
    first: Workload, second: Workload, profile: Profile
) -> tuple[list[float], list[float]]:
    """Time two CPU workloads interleaved: one call of each per round, alternately, after a
    warm-up call of each. Rounds as in :func:`measure` (sized by the slower of the two).

    Returns:
        The per-round times in milliseconds of ``first`` and of ``second``.
    """
    first_ms: list[float] = []
    second_ms: list[float] = []
    timed_first = _timed_cpu(first.fn, first_ms)
    timed_second = _timed_cpu(second.fn, second_ms)
    timed_first(*first.setup())
    timed_second(*second.setup())
    for _ in range(profile.rounds(max(first_ms.pop(), second_ms.pop(), 1e-6))):
        timed_first(*first.setup())
        timed_second(*second.setup())
    return first_ms, second_ms


def time_workload(
    workload: Workload,
    device: torch.device,
    profile: Profile,
    benchmark: Any | None = None,
) -> list[float]:
    """The per-call time of each round of :func:`measure`, in milliseconds."""
    return measure(workload, device, profile, benchmark).times_ms


_COPY_GBPS: dict[tuple[str, int], float] = {}


def copy_bandwidth_gbps(device: torch.device, profile: Profile, nbytes: int | None = None) -> float:
    """The device's copy bandwidth (read + write bytes per second, in GB/s), measured once a run.

    Times ``y.copy_(x)`` of ``nbytes`` (default ``profile.copy_bytes``) with the same harness as
    the benchmarks, the sources rotating like the benchmarks' inputs, so a workload's GB/s divided
    by this is the fraction of reachable bandwidth.
    """
    nbytes = profile.copy_bytes if nbytes is None else max(nbytes, 1)
    key = (str(device), nbytes)
    if key not in _COPY_GBPS:
        count = min(8, max(2, math.ceil(profile.rotate_bytes / nbytes)))
        sources = [torch.ones(nbytes, dtype=torch.uint8, device=device) for _ in range(count)]
        dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
        cycle = Cycle(sources)
        measuring = dataclasses.replace(profile, min_rounds=max(profile.min_rounds, 5))
        times = time_workload(Workload(dst.copy_, lambda: (cycle.next(),)), device, measuring)
        _COPY_GBPS[key] = 2 * nbytes / (summarize(times, device) * 1e6)
    return _COPY_GBPS[key]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    """Device and versions, recorded with every result."""
    from tritonobs import __version__
    from tritonobs.backend import get_backend

    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "tritonobs": __version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "tritonobs_backend": get_backend(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        # CPU timings on a shared machine are only as good as its load.
        "loadavg": round(os.getloadavg()[0], 2),
    }


@dataclasses.dataclass
class Case:
    """A workload identified independently of its provider.

    Attributes:
        key: names the workload; the same key for every provider (the torch.ao time is cached
            under it for the speedups).
        bytes_moved: bytes the workload must read and write at least (the input once, the state).
        build: makes the :class:`Workload` of a provider.
        info: what to record about the workload (op, shape, dtype, data, axis, ...).
    """

    key: str
    bytes_moved: int
    build: Callable[[str], Workload]
    info: dict[str, Any]


_BASELINE_MS: dict[str, float] = {}

# The statistic a workload's time is: the median of CUDA events on a GPU; on a CPU, the fastest
# round, because CPU machines here are shared and a descheduled thread adds whole scheduler ticks.
STATISTIC = {"cuda": "median", "cpu": "min"}


def summarize(times_ms: Sequence[float], device: torch.device) -> float:
    """The time of a workload from its rounds (see :data:`STATISTIC`)."""
    if STATISTIC[device.type] == "min":
        return min(times_ms)
    return statistics.median(times_ms)


def run_case(benchmark: Any, case: Case, provider: str, profile: Profile) -> dict[str, Any]:
    """Time ``case`` for ``provider`` under ``benchmark`` and fill ``benchmark.extra_info``.

    The torch.ao time of the same case comes from this run. On CPU a non-baseline provider is timed
    again interleaved with torch.ao (:func:`measure_paired`), and both times and the speedup come
    from that paired run; elsewhere the torch.ao time is the one cached when the torch.ao benchmark
    ran first, measured here otherwise. On CUDA the tritonobs provider is also timed in a CUDA-graph
    replay, and the copy bandwidth is that of a copy of the case's bytes (on CPU, of
    ``profile.copy_bytes``: a cache would serve a small copy).

    Returns:
        The ``extra_info`` dictionary.
    """
    device = bench_device(profile)
    timing = measure(
        case.build(provider), device, profile, benchmark, graph=provider == "tritonobs"
    )
    times = timing.times_ms
    time_ms = summarize(times, device)
    if provider == BASELINE:
        _BASELINE_MS[case.key] = time_ms
    elif device.type == "cpu" and not benchmark.disabled:
        # Side by side: a CPU shared with other work drifts between two benchmarks run one after
        # the other by more than the difference being measured.
        baseline_times, times = measure_paired(case.build(BASELINE), case.build(provider), profile)
        _BASELINE_MS[case.key] = summarize(baseline_times, device)
        time_ms = summarize(times, device)
    elif case.key not in _BASELINE_MS:
        baseline = time_workload(case.build(BASELINE), device, profile)
        _BASELINE_MS[case.key] = summarize(baseline, device)
    gbps = case.bytes_moved / (time_ms * 1e6)
    copy_bytes = case.bytes_moved if device.type == "cuda" else None
    copy_gbps = copy_bandwidth_gbps(device, profile, copy_bytes)
    info = {
        **environment(device),
        **case.info,
        "case": case.key,
        "provider": provider,
        "profile": profile.name,
        "rounds": len(times),
        "calls_per_round": timing.calls,
        "statistic": STATISTIC[device.type],
        "time_ms": time_ms,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "host_us": timing.host_us,
        "setup_ms": timing.setup_ms,
        "graph_ms": timing.graph_ms,
        "graph_error": timing.graph_error,
        "rounds_caught_up": timing.caught_up,
        "bytes_moved": case.bytes_moved,
        "gbps": gbps,
        "copy_gbps": copy_gbps,
        "copy_fraction": gbps / copy_gbps,
        "torch_ao_ms": _BASELINE_MS[case.key],
        "speedup_vs_torch_ao": _BASELINE_MS[case.key] / time_ms,
    }
    benchmark.extra_info.update(info)
    return info


def compiled(fn: Callable[..., Any], profile: Profile) -> Callable[..., Any]:
    """``torch.compile(fn)`` with the profile's backend (graph breaks allowed: references may
    check a value on the host)."""
    return torch.compile(fn, backend=profile.compile_backend)


def nbytes(x: torch.Tensor) -> int:
    """Bytes of a tensor's elements."""
    return x.numel() * x.element_size()


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` -> ``fp32``, ``bfloat16`` -> ``bf16``, ``float16`` -> ``fp16``."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, str(dtype).removeprefix("torch.")
    )


def shape_name(shape: Sequence[int]) -> str:
    """``(8192, 8192)`` -> ``8192x8192``."""
    return "x".join(str(s) for s in shape)
