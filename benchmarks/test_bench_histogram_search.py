"""``tritonobs::histogram_search``: the L2-optimal range of a histogram (calculate_qparams' core).

Providers: the op; torch.ao's ``HistogramObserver._non_linear_param_search``; ``torch.compile``
of the op's torch reference.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.observer as torch_ao_observer

from tritonobs.bench import Case, Workload, compiled, make_input, run_case
from tritonobs.ops.histogram_search import histogram_search_torch


def test_histogram_search(benchmark, data, provider, profile, device):
    obs = torch_ao_observer.HistogramObserver().to(device)
    for seed in range(profile.stream_batches):
        obs(make_input(data, profile.sizes[0], torch.float32, device, seed))
    args = (obs.histogram, obs.min_val, obs.max_val, obs.dst_nbins)

    def build(p: str) -> Workload:
        if p == "torch.ao":
            return Workload(obs._non_linear_param_search, tuple)
        if p == "tritonobs":
            op = torch.ops.tritonobs.histogram_search
        else:
            op = compiled(histogram_search_torch, profile)
        return Workload(lambda: op(*args), tuple)

    case = Case(
        key=f"histogram_search/{data}",
        bytes_moved=4 * obs.bins,
        build=build,
        info={
            "benchmark": f"op histogram_search ({obs.bins} bins)",
            "op": "tritonobs::histogram_search",
            "shape": str(obs.bins),
            "numel": obs.bins,
            "dtype": "fp32",
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
