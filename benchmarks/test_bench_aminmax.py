"""``tritonobs::aminmax``: per-tensor running min/max and its moving average (EMA).

Providers: the op; torch.ao's MinMaxObserver / MovingAverageMinMaxObserver forward (the code that
computes the same statistic there); ``torch.compile`` of the op's torch reference.
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
from tritonobs.ops.aminmax import aminmax_torch

# statistic -> averaging constant (None: running min/max).
STATISTICS = {"minmax": None, "ema": 0.01}


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_aminmax(benchmark, statistic, shape, dtype, provider, profile, device):
    averaging_constant = STATISTICS[statistic]
    inputs = rotating_inputs("llm", shape, dtype, device, profile)
    cycle = Cycle(inputs)

    def build(p: str) -> Workload:
        if p == "torch.ao":
            if averaging_constant is None:
                obs = torch_ao_observer.MinMaxObserver()
            else:
                obs = torch_ao_observer.MovingAverageMinMaxObserver(averaging_constant)
            obs = obs.to(device)
            obs(inputs[0])
            return Workload(obs, lambda: (cycle.next(),))
        op = torch.ops.tritonobs.aminmax if p == "tritonobs" else compiled(aminmax_torch, profile)
        state = (
            torch.tensor(float("inf"), device=device),
            torch.tensor(float("-inf"), device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )
        op(inputs[0], *state, averaging_constant)
        return Workload(lambda x: op(x, *state, averaging_constant), lambda: (cycle.next(),))

    case = Case(
        key=f"aminmax/{statistic}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]),
        build=build,
        info={
            "benchmark": f"op aminmax ({statistic})",
            "op": "tritonobs::aminmax",
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": "llm",
        },
    )
    run_case(benchmark, case, provider, profile)
