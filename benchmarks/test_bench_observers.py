"""Observer benchmarks: forward and calculate_qparams of every statistics observer, tritonobs vs torch.ao.

Forwards time a warmed-up observer (state initialised) on rotating inputs. calculate_qparams
times an observer that has seen a stream of ``profile.stream_batches`` batches.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.ao.quantization.observer as torch_ao_observer

import tritonobs
from tritonobs.bench import (
    Case,
    Cycle,
    Profile,
    Workload,
    dtype_name,
    make_input,
    nbytes,
    providers,
    rotating_inputs,
    run_case,
    shape_name,
)

# (class name, constructor arguments): the observers that compute statistics.
MINMAX_OBSERVERS: list[tuple[str, dict[str, Any]]] = [
    ("MinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {}),
    ("PerChannelMinMaxObserver", {"ch_axis": 0}),
    ("PerChannelMinMaxObserver", {"ch_axis": -1}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": 0}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": -1}),
]


def observer_id(observer: tuple[str, dict[str, Any]]) -> str:
    name, kwargs = observer
    return name + "".join(f"-{k}{v}" for k, v in kwargs.items())


def make_observer(provider: str, name: str, kwargs: dict[str, Any], device: torch.device):
    """The observer ``name`` from tritonobs or torch.ao, on ``device``."""
    module = tritonobs if provider == "tritonobs" else torch_ao_observer
    return getattr(module, name)(**kwargs).to(device)


@providers("torch.ao", "tritonobs")
@pytest.mark.parametrize("observer", MINMAX_OBSERVERS, ids=observer_id)
def test_forward(benchmark, observer, shape, dtype, provider, profile: Profile, device):
    name, kwargs = observer
    inputs = rotating_inputs("llm", shape, dtype, device, profile)
    cycle = Cycle(inputs)

    def build(p: str) -> Workload:
        obs = make_observer(p, name, kwargs, device)
        obs(inputs[0])
        return Workload(obs, lambda: (cycle.next(),))

    case = Case(
        key=f"forward/{observer_id(observer)}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]),
        build=build,
        info={
            "benchmark": "forward",
            "observer": observer_id(observer),
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": "llm",
        },
    )
    run_case(benchmark, case, provider, profile)


@providers("torch.ao", "tritonobs")
@pytest.mark.parametrize("mode", ["steady", "growing"])
def test_histogram_forward(benchmark, mode, data, shape, dtype, provider, profile, device):
    """Steady: the range already covers every input. Growing: each call widens the range."""
    inputs = rotating_inputs(data, shape, dtype, device, profile)
    cycle = Cycle(inputs)

    def build(p: str) -> Workload:
        obs = make_observer(p, "HistogramObserver", {}, device)
        if mode == "steady":
            for x in inputs:
                obs(x)
            return Workload(obs, lambda: (cycle.next(),))
        # Start each call from the state after one batch at half scale.
        obs(inputs[0] * 0.5)
        saved = {name: buf.clone() for name, buf in obs.named_buffers()}

        def setup() -> tuple[torch.Tensor]:
            for name, buf in obs.named_buffers():
                buf.copy_(saved[name])
            return (cycle.next(),)

        return Workload(obs, setup)

    case = Case(
        key=f"histogram_forward/{mode}/{data}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]),
        build=build,
        info={
            "benchmark": f"forward ({mode} range)",
            "observer": "HistogramObserver",
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)


def _observed(provider: str, name: str, kwargs: dict[str, Any], data: str, profile, device):
    """An observer after a stream of ``profile.stream_batches`` distinct batches."""
    obs = make_observer(provider, name, kwargs, device)
    for seed in range(profile.stream_batches):
        obs(make_input(data, profile.sizes[0], torch.float32, device, seed))
    return obs


@providers("torch.ao", "tritonobs")
@pytest.mark.parametrize("observer", MINMAX_OBSERVERS, ids=observer_id)
def test_calculate_qparams(benchmark, observer, provider, profile, device):
    name, kwargs = observer

    def build(p: str) -> Workload:
        obs = _observed(p, name, kwargs, "llm", profile, device)
        return Workload(obs.calculate_qparams, tuple)

    channels = profile.sizes[0][kwargs["ch_axis"]] if "ch_axis" in kwargs else 1
    case = Case(
        key=f"calculate_qparams/{observer_id(observer)}",
        bytes_moved=8 * channels,
        build=build,
        info={
            "benchmark": "calculate_qparams",
            "observer": observer_id(observer),
            "shape": shape_name(profile.sizes[0]),
            "numel": math.prod(profile.sizes[0]),
            "dtype": "fp32",
            "data": "llm",
        },
    )
    run_case(benchmark, case, provider, profile)


@providers("torch.ao", "tritonobs")
def test_histogram_calculate_qparams(benchmark, data, provider, profile, device):
    def build(p: str) -> Workload:
        obs = _observed(p, "HistogramObserver", {}, data, profile, device)
        return Workload(obs.calculate_qparams, tuple)

    bins = torch_ao_observer.HistogramObserver().bins
    case = Case(
        key=f"histogram_calculate_qparams/{data}",
        bytes_moved=4 * bins,
        build=build,
        info={
            "benchmark": "calculate_qparams",
            "observer": "HistogramObserver",
            "shape": shape_name(profile.sizes[0]),
            "numel": math.prod(profile.sizes[0]),
            "dtype": "fp32",
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
