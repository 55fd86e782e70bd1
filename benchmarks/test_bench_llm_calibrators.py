"""LLM calibration methods, tritonobs vs the peer libraries on the same data in the same run.

* ModelOpt 0.47.0 ``HistogramCalibrator``: ``collect`` over a stream, ``compute_amax`` with
  "entropy", "percentile" and "mse" (its "mse" with the quantizer call fixed, as tritonobs');
  tritonobs: :class:`~tritonobs.AmaxHistogramObserver` and :func:`~tritonobs.histogram_amax`.
* llm-compressor 0.14.0.1 ``memoryless_minmax`` / ``memoryless_mse`` weight observers; tritonobs:
  :func:`~tritonobs.weight_qparams`. Also the four ops behind them, alone.

The peer library is the baseline of each case: its time is recorded as ``peer_ms`` (and, so that
``benchmarks/report.py`` shows it in the baseline column, as ``torch_ao_ms``), the speedup as
``speedup_vs_peer`` (and ``speedup_vs_torch_ao``). A peer library that is not installed is left
out of the parametrization (the tritonobs side still runs, with no speedup), so the CI smoke run,
which allows no skipped benchmark, passes without it. ModelOpt's entropy search takes 10-60 s a
call, so its cases run one timed round.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from typing import Any

import pytest
import torch

from tritonobs.bench import (
    Case,
    Profile,
    Workload,
    bench_device,
    copy_bandwidth_gbps,
    dtype_name,
    environment,
    make_input,
    summarize,
    time_workload,
)
from tritonobs.llm_calibrators import AmaxHistogramObserver, histogram_amax, weight_qparams
from tritonobs.ops.entropy_divergence import entropy_divergence
from tritonobs.ops.histogram_mse import histogram_mse
from tritonobs.ops.weight_mse_sweep import qparams_from_range, weight_mse_sweep


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


MODELOPT = "modelopt 0.47.0"
LLMCOMPRESSOR = "llm-compressor 0.14.0.1"
HAVE = {
    MODELOPT: _installed("modelopt.torch.quantization"),
    LLMCOMPRESSOR: _installed("llmcompressor.observers"),
}


def impls(peer: str) -> list[str]:
    return ([peer] if HAVE[peer] else []) + ["tritonobs"]


_PEER_MS: dict[str, float] = {}


def run(benchmark, case: Case, impl: str, peer: str, profile: Profile, slow_peer: bool = False):
    """Time ``case`` for ``impl`` and record it against ``peer`` (timed here if not yet)."""
    device = bench_device(profile)
    # A slow peer gets one timed round (after the warm-up).
    peer_profile = (
        dataclasses.replace(profile, min_rounds=1, max_rounds=1) if slow_peer else profile
    )
    times = time_workload(
        case.build(impl), device, peer_profile if impl == peer else profile, benchmark
    )
    time_ms = summarize(times, device)
    if impl == peer:
        _PEER_MS[case.key] = time_ms
    elif HAVE[peer] and case.key not in _PEER_MS:
        _PEER_MS[case.key] = summarize(
            time_workload(case.build(peer), device, peer_profile), device
        )
    peer_ms = _PEER_MS.get(case.key)
    gbps = case.bytes_moved / (time_ms * 1e6)
    copy_gbps = copy_bandwidth_gbps(device, profile)
    speedup = None if peer_ms is None else peer_ms / time_ms
    benchmark.extra_info.update(
        {
            **environment(device),
            **case.info,
            "case": case.key,
            "provider": impl,
            "profile": profile.name,
            "rounds": len(times),
            "time_ms": time_ms,
            "min_ms": min(times),
            "bytes_moved": case.bytes_moved,
            "gbps": gbps,
            "copy_gbps": copy_gbps,
            "copy_fraction": gbps / copy_gbps,
            "peer": peer,
            "peer_ms": peer_ms,
            "speedup_vs_peer": speedup,
            "torch_ao_ms": peer_ms,
            "speedup_vs_torch_ao": speedup,
        }
    )


def stream_shape(profile: Profile) -> tuple[int, ...]:
    return (16, 64) if profile.tiny else (1024, 2048)


def histogram_bins(profile: Profile) -> int:
    return 256 if profile.tiny else 2048


def _stream(data: str, profile: Profile, dtype: torch.dtype) -> list[torch.Tensor]:
    device = bench_device(profile)
    count = 2 if profile.tiny else 6
    return [make_input(data, stream_shape(profile), dtype, device, seed) for seed in range(count)]


def _modelopt_calibrator(bins: int, method_bits: Any = 8):
    warnings.filterwarnings("ignore", module="modelopt")
    from modelopt.torch.quantization.calib.histogram import HistogramCalibrator

    return HistogramCalibrator(num_bits=method_bits, num_bins=bins)


@pytest.mark.parametrize("impl", impls(MODELOPT))
def test_collect(benchmark, impl, data, dtype, profile: Profile) -> None:
    batches = _stream(data, profile, dtype)
    bins = histogram_bins(profile)

    def build(p: str) -> Workload:
        if p == MODELOPT:

            def collect_modelopt() -> None:
                calibrator = _modelopt_calibrator(bins)
                for x in batches:
                    calibrator.collect(x)

            return Workload(collect_modelopt, tuple)

        def collect_tritonobs() -> None:
            obs = AmaxHistogramObserver(bins=bins).to(batches[0].device)
            for x in batches:
                obs(x)

        return Workload(collect_tritonobs, tuple)

    case = Case(
        key=f"llm/collect/{data}/{dtype_name(dtype)}",
        bytes_moved=sum(x.numel() * x.element_size() for x in batches),
        build=build,
        info=_info(
            f"collect ({len(batches)} batches)", "HistogramCalibrator.collect", batches, data
        ),
    )
    run(benchmark, case, impl, MODELOPT, profile)


def _info(benchmark: str, op: str, batches: list[torch.Tensor], data: str) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "op": op,
        # A list, not "1024x2048": report.py plots only the torch.ao comparisons' "AxB" shapes.
        "shape": str(list(batches[0].shape)),
        "numel": batches[0].numel(),
        "dtype": dtype_name(batches[0].dtype),
        "data": data,
    }


def _collected(data: str, profile: Profile) -> tuple[torch.Tensor, torch.Tensor]:
    obs = AmaxHistogramObserver(bins=histogram_bins(profile))
    for x in _stream(data, profile, torch.float32):
        obs(x.cpu())
    return obs.collected()


METHODS = [("entropy", {}), ("percentile", {}), ("mse", {}), ("mse", {"num_bits": (4, 3)})]


@pytest.mark.parametrize("impl", impls(MODELOPT))
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0] + ("-fp8" if m[1] else ""))
def test_compute_amax(benchmark, impl, method, profile: Profile) -> None:
    name, options = method
    hist, edges = _collected("llm", profile)
    start_bin = 128 if hist.numel() > 256 else 64

    def build(p: str) -> Workload:
        if p == MODELOPT:
            from tests.make_peer_fixtures import modelopt_compute_amax

            calibrator = _modelopt_calibrator(hist.numel())
            calibrator._calib_hist, calibrator._calib_bin_edges = hist, edges
            opts = {**options, "start_bin": start_bin}
            return Workload(lambda: modelopt_compute_amax(calibrator, name, opts), tuple)
        return Workload(
            lambda: histogram_amax(hist, edges, name, start_bin=start_bin, **options), tuple
        )

    case = Case(
        key=f"llm/compute_amax/{name}/{options}",
        bytes_moved=8 * hist.numel(),
        build=build,
        info={
            "benchmark": f"compute_amax {name}{' fp8' if options else ''} ({hist.numel()} bins)",
            "op": "HistogramCalibrator.compute_amax",
            "shape": str(hist.numel()),
            "numel": hist.numel(),
            "dtype": "fp32",
            "data": "llm",
        },
    )
    run(benchmark, case, impl, MODELOPT, profile, slow_peer=name in ("entropy", "mse"))


WEIGHT_CASES = [
    ("int8-channel", {"strategy": "channel"}),
    ("int4-group128", {"strategy": "group", "group_size": 128, "num_bits": 4}),
    ("fp8-channel", {"strategy": "channel", "type": "float", "num_bits": 8}),
    ("fp8-block128", {"strategy": "block", "block_structure": [128, 128], "type": "float"}),
]


def _weight(profile: Profile, dtype: torch.dtype) -> torch.Tensor:
    shape = (16, 256) if profile.tiny else (1024, 2048)
    return (make_input("normal", shape, torch.float32, bench_device(profile), 0) * 0.02).to(dtype)


@pytest.mark.parametrize("impl", impls(LLMCOMPRESSOR))
@pytest.mark.parametrize("observer", ["minmax", "mse"])
@pytest.mark.parametrize("scheme", WEIGHT_CASES, ids=lambda c: c[0])
def test_weight_qparams(benchmark, impl, observer, scheme, dtype, profile: Profile) -> None:
    name, args = scheme
    w = _weight(profile, dtype)

    def build(p: str) -> Workload:
        if p == LLMCOMPRESSOR:
            from tests.make_peer_fixtures import llmcompressor_qparams

            return Workload(lambda: llmcompressor_qparams(w, observer, args), tuple)
        return Workload(lambda: weight_qparams(w, observer=observer, **args), tuple)

    case = Case(
        key=f"llm/weight/{observer}/{name}/{dtype_name(dtype)}",
        bytes_moved=w.numel() * w.element_size(),
        build=build,
        info={**_info(f"weight {observer} {name}", "weight_qparams", [w], "normal")},
    )
    run(benchmark, case, impl, LLMCOMPRESSOR, profile)


OPS = ["entropy_divergence", "histogram_mse", "weight_mse_sweep", "amax_histogram_update"]


@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op: str, profile: Profile) -> None:
    """The four ops alone, tritonobs only: entropy sweep, mse sweep, weight error sweep (4 grid
    steps of int4 group-128), one collect step."""
    hist, edges = _collected("llm", profile)
    if op == "entropy_divergence":
        counts = hist.to(torch.int64)
        call, numel = (lambda: entropy_divergence(counts, 64, 1, 128)), hist.numel()
    elif op == "histogram_mse":
        centers = (edges[1:] + edges[:-1]) / 2
        call, numel = (lambda: histogram_mse(hist, centers, 64, 1, 8, False, False)), hist.numel()
    elif op == "weight_mse_sweep":
        groups = _weight(profile, torch.float32).reshape(-1, 128)
        lo, hi = groups.amin(-1), groups.amax(-1)
        qparams = [
            qparams_from_range(lo * p, hi * p, 4, False, True) for p in (1, 0.99, 0.98, 0.97)
        ]
        scales = torch.stack([s for s, _ in qparams])
        zero_points = torch.stack([z for _, z in qparams])
        call = lambda: weight_mse_sweep(groups, scales, zero_points, 4, False, True, 2.4)  # noqa: E731
        numel = groups.numel()
    else:
        batch = _stream("llm", profile, torch.float32)[0]
        obs = AmaxHistogramObserver(bins=histogram_bins(profile))
        obs(batch)
        call, numel = (lambda: obs(batch)), batch.numel()
    device = bench_device(profile)
    times = time_workload(Workload(call, tuple), device, profile, benchmark)
    time_ms = summarize(times, device)
    gbps = 4 * numel / (time_ms * 1e6)
    copy_gbps = copy_bandwidth_gbps(device, profile)
    benchmark.extra_info.update(
        {
            **environment(device),
            "benchmark": f"op {op}",
            "op": f"tritonobs::{op}",
            "shape": str(numel),
            "numel": numel,
            "dtype": "fp32",
            "data": "llm",
            "case": f"llm/op/{op}",
            "provider": "tritonobs",
            "profile": profile.name,
            "time_ms": time_ms,
            "bytes_moved": 4 * numel,
            "gbps": gbps,
            "copy_gbps": copy_gbps,
            "copy_fraction": gbps / copy_gbps,
            "torch_ao_ms": None,
            "speedup_vs_torch_ao": None,
        }
    )
