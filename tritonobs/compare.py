"""Time tritonobs' observers against torch.ao's on one calibration workload, fairly.

:func:`compare_with_torch_ao` calibrates the same model on the same batches with each side's
observers through :func:`tritonobs.calibrate.calibrate`. One untimed warm-up run per side comes
first (caches, allocator, lazily built kernels); those two runs are ordinary calibrations, and the
tritonobs one is the result to keep. Then ``repeats`` timed runs alternate tritonobs, torch.ao,
tritonobs, ..., each with fresh observers, so that a slow spell of a shared machine hits both
sides. Each side reports its fastest (``best``) and its median repeat of the observer time,
calibrate's own overhead and the calibration total; the speedup is torch.ao's time over
tritonobs' (above 1: tritonobs is faster). ``tritonobs calibrate --compare-torch-ao`` prints
:meth:`Comparison.report`; ``benchmarks/test_bench_calibrate.py`` records the same numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tritonobs.calibrate import CalibrationResult, calibrate, observer_factory

Side = Literal["tritonobs", "torch.ao"]
SIDES: tuple[Side, ...] = ("tritonobs", "torch.ao")
Metric = Literal["observers", "overhead", "total"]
Statistic = Literal["best", "median"]

_METRIC_TEXT: dict[Metric, str] = {
    "observers": "observers ms",
    "overhead": "calibrate overhead ms",
    "total": "calibration total ms",
}


@dataclass(frozen=True)
class RunTimes:
    """The times of one calibrate run, in seconds.

    Attributes:
        observers: time in the observers' forward (``CalibrationResult.observer_seconds``).
        overhead: calibrate's own time outside the model and the observers
            (``CalibrationResult.overhead_seconds``).
        total: wall time of the calibration loop (``CalibrationResult.seconds``).
    """

    observers: float
    overhead: float
    total: float

    @classmethod
    def of(cls, result: CalibrationResult) -> RunTimes:
        """The times of ``result``."""
        return cls(result.observer_seconds, result.overhead_seconds or 0.0, result.seconds)


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_with_torch_ao` measured.

    Attributes:
        result: the tritonobs warm-up run, an ordinary calibration: the qparams to keep.
        reference: the torch.ao warm-up run, the qparams compared against.
        runs: per side, the times of its timed repeats in the order they ran.
        threads: ``torch.get_num_threads()`` during the runs.
        device: the model's device.
    """

    result: CalibrationResult
    reference: CalibrationResult
    runs: dict[Side, tuple[RunTimes, ...]]
    threads: int
    device: str

    @property
    def repeats(self) -> int:
        """Timed runs per side."""
        return len(self.runs["tritonobs"])

    def times(self, side: Side, metric: Metric) -> list[float]:
        """One ``metric`` of each timed repeat of ``side``, in seconds, in the order they ran."""
        return [getattr(run, metric) for run in self.runs[side]]

    def statistic(self, side: Side, metric: Metric, statistic: Statistic = "best") -> float:
        """The fastest (``best``) or the median repeat's ``metric`` for ``side``, in seconds."""
        values = self.times(side, metric)
        return min(values) if statistic == "best" else statistics.median(values)

    def speedup(self, metric: Metric = "total", statistic: Statistic = "best") -> float:
        """torch.ao's ``metric`` over tritonobs' (same statistic); above 1: tritonobs is faster.

        Returns ``inf`` when tritonobs' time is zero (an observer that does nothing).
        """
        ours = self.statistic("tritonobs", metric, statistic)
        theirs = self.statistic("torch.ao", metric, statistic)
        return theirs / ours if ours > 0 else float("inf")

    def largest_difference(self) -> dict[str, tuple[float, str | None]]:
        """The largest absolute scale and zero-point difference between the two warm-up runs'
        qparams, each with the key where it occurs (``None`` when every key is equal)."""
        worst: dict[str, tuple[float, str | None]] = {
            "scale": (0.0, None),
            "zero_point": (0.0, None),
        }
        theirs = self.reference.qparams()
        for key, pair in self.result.qparams().items():
            for name, a, b in zip(("scale", "zero_point"), pair, theirs[key], strict=True):
                diff = float((a.double().cpu() - b.double().cpu()).abs().max())
                if diff > worst[name][0]:
                    worst[name] = (diff, key)
        return worst

    def method(self) -> str:
        """One line saying how the times were measured."""
        threads = f"{self.threads} torch CPU thread{'s' if self.threads != 1 else ''}"
        return (
            f"timing: 1 untimed warm-up run per side, then {self.repeats} timed repeat"
            f"{'s' if self.repeats != 1 else ''} per side alternating tritonobs, torch.ao "
            f"(fresh observers each run); best = fastest repeat, median = median repeat; "
            f"device {self.device}, {threads}"
        )

    def report(self) -> str:
        """The method line, a table of each side's best and median times and the speedups, and
        the largest qparams difference."""
        header = ["", *(f"{_METRIC_TEXT[m]} (best / median)" for m in _METRIC_TEXT)]
        rows = [header]
        for side in SIDES:
            rows.append(
                [
                    side,
                    *(
                        f"{self.statistic(side, m, 'best') * 1e3:.2f} / "
                        f"{self.statistic(side, m, 'median') * 1e3:.2f}"
                        for m in _METRIC_TEXT
                    ),
                ]
            )
        rows.append(
            [
                "speedup (torch.ao / tritonobs, >1: tritonobs faster)",
                *(
                    f"{self.speedup(m, 'best'):.2f}x / {self.speedup(m, 'median'):.2f}x"
                    for m in _METRIC_TEXT
                ),
            ]
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [self.method()]
        for row in rows:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        worst = self.largest_difference()
        keys = len(self.result.qparams())
        parts = []
        for name in ("scale", "zero_point"):
            diff, key = worst[name]
            where = f"all {keys} keys equal" if key is None else f"at {key}"
            parts.append(f"{name} {diff:.6g} ({where})")
        lines.append(f"largest qparams difference vs torch.ao: {', '.join(parts)}")
        return "\n".join(lines)


def _device(model: nn.Module) -> str:
    for tensor in model.parameters():
        return str(tensor.device)
    return "cpu"


def compare_with_torch_ao(
    model: nn.Module,
    batches: Iterable[Any],
    observer: str = "minmax",
    *,
    repeats: int = 5,
    progress: bool | None = None,
    metadata: dict[str, Any] | None = None,
) -> Comparison:
    """Calibrate ``model`` with tritonobs' and with torch.ao's ``observer``, timed fairly.

    One untimed warm-up run per side (tritonobs, then torch.ao), then ``repeats`` timed runs per
    side alternating tritonobs, torch.ao, tritonobs, ...; every run is a separate
    :func:`~tritonobs.calibrate.calibrate` call with fresh observers, so no run inherits state.

    Args:
        model: the model, on one device.
        batches: the calibration batches (see :func:`~tritonobs.calibrate.calibrate`); iterated
            once per run, so an iterator is read into a list first.
        observer: a short name of :func:`~tritonobs.calibrate.observer_factory` (``minmax``,
            ``moving-average``, ``per-channel``, ``histogram``).
        repeats: timed runs per side.
        progress: progress bars for the two warm-up runs (the timed runs never show one:
            redrawing it would be timed).
        metadata: stored in the tritonobs warm-up result (the one to save).

    Returns:
        The :class:`Comparison`.

    Raises:
        ValueError: ``repeats`` is below 1 or ``observer`` is not a short name.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    factories = {
        "tritonobs": observer_factory(observer),
        "torch.ao": observer_factory(observer, torch_ao=True),
    }
    batches = list(batches)

    def run(side: Side, **options: Any) -> CalibrationResult:
        return calibrate(model, batches, observer=factories[side], **options)

    result = run("tritonobs", progress=progress, desc="tritonobs", metadata=metadata)
    reference = run("torch.ao", progress=progress, desc="torch.ao")
    runs: dict[Side, list[RunTimes]] = {side: [] for side in SIDES}
    for _ in range(repeats):
        for side in SIDES:
            runs[side].append(RunTimes.of(run(side, progress=False)))
    return Comparison(
        result=result,
        reference=reference,
        runs={side: tuple(times) for side, times in runs.items()},
        threads=torch.get_num_threads(),
        device=_device(model),
    )
