"""``tritonobs::histogram_rebin``: move a running histogram onto a wider range.

Providers: the op; torch.ao's ``HistogramObserver._upscale_histogram`` (its re-binning step);
``torch.compile`` of the op's torch reference.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.observer as torch_ao_observer

from tritonobs.bench import Case, Workload, compiled, make_input, run_case
from tritonobs.ops.histogram_rebin import histogram_rebin_torch


def test_histogram_rebin(benchmark, data, provider, profile, device):
    obs = torch_ao_observer.HistogramObserver().to(device)
    obs(make_input(data, profile.sizes[0], torch.float32, device, seed=0))
    orig = (obs.histogram, obs.min_val, obs.max_val)
    # The range grows by half its width on each side.
    half_width = (obs.max_val - obs.min_val) / 2
    new_min, new_max = obs.min_val - half_width, obs.max_val + half_width

    def build(p: str) -> Workload:
        if p == "torch.ao":
            return Workload(lambda: obs._upscale_histogram(*orig, new_min, new_max), tuple)
        if p == "tritonobs":
            op = torch.ops.tritonobs.histogram_rebin
        else:
            op = compiled(histogram_rebin_torch, profile)
        return Workload(lambda: op(*orig, new_min, new_max, obs.upsample_rate), tuple)

    case = Case(
        key=f"histogram_rebin/{data}",
        bytes_moved=8 * obs.bins,
        build=build,
        info={
            "benchmark": f"op histogram_rebin ({obs.bins} bins)",
            "op": "tritonobs::histogram_rebin",
            "shape": str(obs.bins),
            "numel": obs.bins,
            "dtype": "fp32",
            "data": data,
        },
    )
    run_case(benchmark, case, provider, profile)
