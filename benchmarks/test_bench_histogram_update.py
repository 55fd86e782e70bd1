"""``tritonobs::histogram_update``: fold a batch into a running histogram, steady or growing range.

Providers: the op; torch.ao's HistogramObserver forward (the code that does this step there);
``torch.compile`` of the op's torch reference.
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
from tritonobs.ops.histogram_update import histogram_update_torch


@pytest.mark.parametrize("mode", ["steady", "growing"])
def test_histogram_update(benchmark, mode, data, shape, dtype, provider, profile, device):
    """Steady: the range already covers every input. Growing: each call widens the range."""
    inputs = rotating_inputs(data, shape, dtype, device, profile)
    cycle = Cycle(inputs)
    warm_up = inputs if mode == "steady" else [inputs[0] * 0.5]

    def build(p: str) -> Workload:
        if p == "torch.ao":
            obs = torch_ao_observer.HistogramObserver().to(device)
            for x in warm_up:
                obs(x)
            saved = {name: buf.clone() for name, buf in obs.named_buffers()}

            def restore() -> tuple[torch.Tensor]:
                if mode == "growing":
                    for name, buf in obs.named_buffers():
                        buf.copy_(saved[name])
                return (cycle.next(),)

            return Workload(obs, restore)
        if p == "tritonobs":
            op = torch.ops.tritonobs.histogram_update
        else:
            op = compiled(histogram_update_torch, profile)
        bins = torch_ao_observer.HistogramObserver().bins
        state = (
            torch.zeros(bins, device=device),
            torch.tensor(float("inf"), device=device),
            torch.tensor(float("-inf"), device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )
        for x in warm_up:
            op(x, *state, 16)
        saved = [buf.clone() for buf in state]

        def restore_state() -> tuple[torch.Tensor]:
            # The op updates the buffers in place: "growing" starts each call from the same state.
            if mode == "growing":
                for buf, value in zip(state, saved, strict=True):
                    buf.copy_(value)
            return (cycle.next(),)

        return Workload(lambda x: op(x, *state, 16), restore_state)

    case = Case(
        key=f"histogram_update/{mode}/{data}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]),
        build=build,
        info={
            "benchmark": f"op histogram_update ({mode} range)",
            "op": "tritonobs::histogram_update",
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
