"""``tritonobs::aminmax_per_channel``: per-channel running min/max (and EMA) on the first and last axis.

Providers: the op; torch.ao's PerChannelMinMaxObserver / MovingAveragePerChannelMinMaxObserver
forward (which moves the channel axis to the front and copies); ``torch.compile`` of the op's
torch reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization.observer as torch_ao_observer

from tritonobs.bench import (
    Case,
    Cycle,
    Workload,
    compiled,
    dtype_name,
    nbytes,
    rotating_inputs,
    run_case,
    shape_name,
)
from tritonobs.ops.aminmax_per_channel import aminmax_per_channel_torch

STATISTICS = {"minmax": None, "ema": 0.01}


@pytest.mark.parametrize("ch_axis", [0, -1])
@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_aminmax_per_channel(
    benchmark, statistic, ch_axis, shape, dtype, provider, profile, device
):
    averaging_constant = STATISTICS[statistic]
    inputs = rotating_inputs("llm", shape, dtype, device, profile)
    cycle = Cycle(inputs)

    def build(p: str) -> Workload:
        if p == "torch.ao":
            if averaging_constant is None:
                obs = torch_ao_observer.PerChannelMinMaxObserver(ch_axis=ch_axis)
            else:
                obs = torch_ao_observer.MovingAveragePerChannelMinMaxObserver(
                    averaging_constant, ch_axis=ch_axis
                )
            obs = obs.to(device)
            obs(inputs[0])
            return Workload(obs, lambda: (cycle.next(),))
        if p == "tritonobs":
            op = torch.ops.tritonobs.aminmax_per_channel
        else:
            op = compiled(aminmax_per_channel_torch, profile)
        channels = inputs[0].shape[ch_axis]
        state = (
            torch.full((channels,), float("inf"), device=device),
            torch.full((channels,), float("-inf"), device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )
        op(inputs[0], ch_axis, *state, averaging_constant)
        return Workload(
            lambda x: op(x, ch_axis, *state, averaging_constant), lambda: (cycle.next(),)
        )

    case = Case(
        key=f"aminmax_per_channel/{statistic}/{ch_axis}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]),
        build=build,
        info={
            "benchmark": f"op aminmax_per_channel ({statistic}, ch_axis={ch_axis})",
            "op": "tritonobs::aminmax_per_channel",
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": "llm",
        },
    )
    run_case(benchmark, case, provider, profile)
