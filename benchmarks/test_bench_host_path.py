"""Host path: what one observer forward costs the host, tritonobs against torch.ao's whole forward.

On a GPU the Python around a kernel sets the speed of small and medium activations, so this is
measured for every observer, beside torch.ao's forward on a tiny [2, 8] tensor in the same run:

* CPU profiles: the Triton (CUDA) code path on CPU tensors with every Triton launch stubbed
  (``tritonobs.hostpath``), so what is timed is the host work of a CUDA forward on an
  LLM-sized bf16 activation; launches per forward are counted (Triton launches and torch
  kernels) and recorded.
* CUDA profiles: ``BACK_TO_BACK`` real forwards of the tiny tensor between two CUDA events, with
  no synchronisation between them (the host is the bottleneck there), for both sides; the launch
  count comes from the same stubbed count.

A round is ``BACK_TO_BACK`` forwards; ``host_us`` in the record is per forward.
``speedup_vs_torch_ao`` >= 2 means the host work is at most half of torch.ao's whole forward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
import torch.ao.quantization.observer as torch_ao_observer

import tritonobs
from tritonobs.backend import use_backend
from tritonobs.bench import Case, Workload, make_input, nbytes, providers, run_case, shape_name
from tritonobs.hostpath import observer_host_path, stub_triton_launches

pytest.importorskip("triton")

BACK_TO_BACK = 100
TINY = (2, 8)
# The activation whose host path is timed on CPU (the kernels do not run: its size is free).
ACTIVATION = (2048, 4096)

OBSERVERS: list[tuple[str, dict[str, Any]]] = [
    ("MinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {}),
    ("PerChannelMinMaxObserver", {"ch_axis": 0}),
    ("PerChannelMinMaxObserver", {"ch_axis": -1}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": -1}),
    ("HistogramObserver", {}),
]


def observer_id(observer: tuple[str, dict[str, Any]]) -> str:
    name, kwargs = observer
    return name + "".join(f"-{k}{v}" for k, v in kwargs.items())


def _forwards(observer: torch.nn.Module, x: torch.Tensor) -> None:
    for _ in range(BACK_TO_BACK):
        observer(x)


@providers("torch.ao", "tritonobs")
@pytest.mark.parametrize("observer", OBSERVERS, ids=observer_id)
def test_host_path(benchmark, observer, provider, profile, device):
    name, kwargs = observer
    tiny = make_input("normal", TINY, torch.float32, device, seed=0)
    stubbed = device.type == "cpu"
    if stubbed:
        shape = profile.sizes[0] if profile.tiny else ACTIVATION
        x = make_input("llm", shape, torch.bfloat16, device, seed=1)
    else:
        x = tiny
    count, _ = observer_host_path(getattr(tritonobs, name)(**kwargs).to(device), x, calls=10)

    def build(p: str) -> Workload:
        if p == "torch.ao":
            reference = getattr(torch_ao_observer, name)(**kwargs).to(device)
            reference(tiny)
            return Workload(lambda: _forwards(reference, tiny), tuple)
        ours = getattr(tritonobs, name)(**kwargs).to(device)
        with use_backend("torch"):
            ours(x)

        def run() -> None:
            with (
                use_backend("triton"),
                stub_triton_launches() if stubbed else contextlib.nullcontext(),
            ):
                _forwards(ours, x)

        run()  # plans and workspaces made
        return Workload(run, tuple)

    case = Case(
        key=f"host_path/{observer_id(observer)}",
        bytes_moved=nbytes(tiny),
        build=build,
        info={
            "benchmark": "host path (stubbed launches)" if stubbed else "host path",
            "observer": observer_id(observer),
            "shape": shape_name(x.shape),
            "numel": x.numel(),
            "dtype": "bf16" if stubbed else "fp32",
            "data": "llm",
            "torch_ao_shape": shape_name(TINY),
            "launches_triton": len(count.triton),
            "launches_torch": len(count.torch),
            "host_syncs": count.syncs,
        },
    )
    info = run_case(benchmark, case, provider, profile)
    benchmark.extra_info["host_us"] = info["time_ms"] * 1e3 / BACK_TO_BACK
    benchmark.extra_info["torch_ao_host_us"] = info["torch_ao_ms"] * 1e3 / BACK_TO_BACK
