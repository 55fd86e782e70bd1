"""``tritonobs::quantization_error``: the L2 error of many candidate ranges of a histogram at once.

torch.ao computes the same error one candidate at a time
(``HistogramObserver._compute_quantization_error``, one host sync each); the torch.ao provider
evaluates the same candidates that way.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.observer as torch_ao_observer

from tritonobs.bench import Case, Workload, compiled, make_input, run_case
from tritonobs.ops.quantization_error import quantization_error_torch


def observed_histogram_observer(data: str, profile, device: torch.device):
    """A torch.ao HistogramObserver after one batch of ``data`` (its histogram is the op's input)."""
    obs = torch_ao_observer.HistogramObserver().to(device)
    obs(make_input(data, profile.sizes[0], torch.float32, device, seed=0))
    return obs


def test_quantization_error(benchmark, data, provider, profile, device):
    obs = observed_histogram_observer(data, profile, device)
    candidates = 8 if profile.tiny else 256
    # Ranges shrinking from both ends, as the search visits them.
    start_bins = torch.arange(candidates, device=device)
    end_bins = obs.bins - 1 - start_bins

    def build(p: str) -> Workload:
        if p == "torch.ao":
            pairs = list(zip(start_bins.tolist(), end_bins.tolist(), strict=True))
            return Workload(
                lambda: [obs._compute_quantization_error(s, e) for s, e in pairs], tuple
            )
        if p == "tritonobs":
            op = torch.ops.tritonobs.quantization_error
        else:
            op = compiled(quantization_error_torch, profile)
        args = (obs.histogram, obs.min_val, obs.max_val, start_bins, end_bins, obs.dst_nbins)
        return Workload(lambda: op(*args), tuple)

    case = Case(
        key=f"quantization_error/{data}/{candidates}",
        bytes_moved=4 * obs.bins + 20 * candidates,
        build=build,
        info={
            "benchmark": f"op quantization_error ({candidates} candidates)",
            "op": "tritonobs::quantization_error",
            "shape": str(obs.bins),
            "numel": obs.bins,
            "dtype": "fp32",
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
