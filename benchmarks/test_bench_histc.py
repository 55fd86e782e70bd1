"""``tritonobs::histc``: histogram of one batch over a given range.

Providers: the op; ``torch.histc`` with tensor bounds, as torch.ao's HistogramObserver calls it;
``torch.compile`` of the op's torch reference.
"""

from __future__ import annotations

import torch

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
from tritonobs.ops.histc import histc_torch

BINS = 2048


def test_histc(benchmark, data, shape, dtype, provider, profile, device):
    inputs = rotating_inputs(data, shape, dtype, device, profile)
    cycle = Cycle(inputs)
    lo = torch.stack([x.float().amin() for x in inputs]).amin()
    hi = torch.stack([x.float().amax() for x in inputs]).amax()

    def build(p: str) -> Workload:
        if p == "torch.ao":
            return Workload(lambda x: torch.histc(x, BINS, min=lo, max=hi), lambda: (cycle.next(),))
        op = torch.ops.tritonobs.histc if p == "tritonobs" else compiled(histc_torch, profile)
        return Workload(lambda x: op(x, lo, hi, BINS), lambda: (cycle.next(),))

    case = Case(
        key=f"histc/{data}/{shape_name(shape)}/{dtype_name(dtype)}",
        bytes_moved=nbytes(inputs[0]) + 8 * BINS,
        build=build,
        info={
            "benchmark": f"op histc ({BINS} bins)",
            "op": "tritonobs::histc",
            "shape": shape_name(shape),
            "numel": inputs[0].numel(),
            "dtype": dtype_name(dtype),
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
