"""tritonobs.compare: warm-up runs first, timed repeats alternating the sides with fresh observers,
statistics and speedups from the repeats, qparams from ordinary calibrations, a readable report."""

from __future__ import annotations

import importlib
import statistics
from typing import Any

import pytest
import torch
import torch.ao.quantization.observer as ao
from torch import nn

import tritonobs
from tests.test_calibrate import EXACT, TwoInputs, awkward_batches, make_block, reference
from tritonobs.calibrate import CalibrationResult, calibrate
from tritonobs.compare import Comparison, RunTimes, compare_with_torch_ao

compare_module = importlib.import_module("tritonobs.compare")

# Injected times of the timed repeats, per side: (observers, overhead, total) in seconds.
FAKE = {
    "tritonobs": [(0.05, 0.002, 0.5), (0.02, 0.001, 0.3), (0.04, 0.003, 0.4)],
    "torch.ao": [(0.1, 0.002, 0.6), (0.3, 0.004, 0.9), (0.08, 0.001, 0.75)],
}
WARM_UP = (7.0, 1.0, 70.0)  # slow cold runs: must not count


def side_of(result: CalibrationResult) -> str:
    observers = list(result.observers.values())
    if all(isinstance(o, tritonobs.ObserverBase) for o in observers):
        return "tritonobs"
    assert all(type(o).__module__.startswith("torch.ao.") for o in observers)
    return "torch.ao"


def with_times(result: CalibrationResult, times: tuple[float, float, float]) -> CalibrationResult:
    """``result`` with its observer time, overhead and total replaced by ``times``."""
    observers, overhead, total = times
    entries = list(result.entries.values())
    for n, entry in enumerate(entries):
        entry.seconds = observers if n == 0 else 0.0
    return CalibrationResult(
        entries, result.batches, total, result.metadata, overhead_seconds=overhead
    )


def test_warm_up_then_alternating_repeats_with_fresh_observers(monkeypatch) -> None:
    calls: list[dict[str, Any]] = []
    repeats = {side: iter(times) for side, times in FAKE.items()}

    def recording_calibrate(model: nn.Module, batches: Any, **options: Any) -> CalibrationResult:
        result = calibrate(model, batches, **options)
        side = side_of(result)
        warm_up = len(calls) < 2
        result = with_times(result, WARM_UP if warm_up else next(repeats[side]))
        calls.append({"side": side, "options": options, "result": result})
        return result

    monkeypatch.setattr(compare_module, "calibrate", recording_calibrate)
    comparison = compare_with_torch_ao(
        make_block(), awkward_batches(), "minmax", repeats=3, metadata={"run": 1}
    )
    assert [c["side"] for c in calls] == ["tritonobs", "torch.ao"] * 4
    assert [c["options"].get("progress") for c in calls] == [None, None] + [False] * 6
    assert [c["options"].get("metadata") for c in calls] == [{"run": 1}] + [None] * 7
    assert comparison.result is calls[0]["result"]
    assert comparison.reference is calls[1]["result"]
    assert comparison.result.metadata == {"run": 1}
    observers = [id(o) for c in calls for o in c["result"].observers.values()]
    assert len(set(observers)) == len(observers) == 8 * 2
    for side, times in FAKE.items():
        assert comparison.runs[side] == tuple(RunTimes(*t) for t in times)
    assert comparison.repeats == 3
    assert comparison.threads == torch.get_num_threads() and comparison.device == "cpu"


def fake_comparison(result: CalibrationResult, reference_result: CalibrationResult) -> Comparison:
    return Comparison(
        result=result,
        reference=reference_result,
        runs={side: tuple(RunTimes(*t) for t in times) for side, times in FAKE.items()},
        threads=2,
        device="cpu",
    )


def test_statistics_and_speedups_of_the_repeats() -> None:
    result = calibrate(make_block(), awkward_batches())
    comparison = fake_comparison(result, result)
    for side, times in FAKE.items():
        for index, metric in enumerate(("observers", "overhead", "total")):
            values = [t[index] for t in times]
            assert comparison.times(side, metric) == values
            assert comparison.statistic(side, metric, "best") == min(values)
            assert comparison.statistic(side, metric, "median") == statistics.median(values)
    assert comparison.speedup("total", "best") == 0.6 / 0.3
    assert comparison.speedup("total", "median") == 0.75 / 0.4
    assert comparison.speedup("observers", "best") == 0.08 / 0.02
    assert comparison.speedup("observers", "median") == 0.1 / 0.04


def two_input_batches(left_low: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left inputs span [left_low, 3], right inputs [-1, 1]."""
    return [
        (torch.tensor([[left_low, 0.0, 1.0, 3.0]]), torch.tensor([[-1.0, 0.0, 1.0]])),
        (torch.tensor([[0.5, 2.0, -0.5, 1.0]]), torch.tensor([[0.25, -0.5, 0.75]])),
    ]


def test_report_lines() -> None:
    torch.manual_seed(0)
    model = TwoInputs()
    ours = calibrate(model, two_input_batches(-1.0))
    comparison = fake_comparison(ours, calibrate(model, two_input_batches(-1.0)))
    lines = comparison.report().splitlines()
    assert lines[0] == (
        "timing: 1 untimed warm-up run per side, then 3 timed repeats per side alternating "
        "tritonobs, torch.ao (fresh observers each run); best = fastest repeat, median = median "
        "repeat; device cpu, 2 torch CPU threads"
    )
    cells = [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[1:5]]
    assert cells == [
        [
            "observers ms (best / median)",
            "calibrate overhead ms (best / median)",
            "calibration total ms (best / median)",
        ],
        ["tritonobs", "20.00 / 40.00", "1.00 / 2.00", "300.00 / 400.00"],
        ["torch.ao", "80.00 / 100.00", "1.00 / 2.00", "600.00 / 750.00"],
        [
            "speedup (torch.ao / tritonobs, >1: tritonobs faster)",
            "4.00x / 2.50x",
            "1.00x / 1.00x",
            "2.00x / 1.88x",
        ],
    ]
    assert lines[5:] == [
        "largest qparams difference vs torch.ao: scale 0 (all 2 keys equal), "
        "zero_point 0 (all 2 keys equal)"
    ]


def test_largest_difference_names_the_key() -> None:
    """Left range [-1, 3] against [-2, 3] (quint8): scale 4/255 against 5/255, zero point 64
    against 102; the right input is the same on both sides."""
    torch.manual_seed(0)
    model = TwoInputs()
    comparison = fake_comparison(
        calibrate(model, two_input_batches(-1.0)), calibrate(model, two_input_batches(-2.0))
    )
    worst = comparison.largest_difference()
    assert worst["scale"][1] == "a.input"
    assert worst["scale"][0] == pytest.approx(1 / 255, rel=1e-6)
    assert worst["zero_point"] == (38.0, "a.input")
    assert comparison.report().splitlines()[-1] == (
        f"largest qparams difference vs torch.ao: scale {worst['scale'][0]:.6g} (at a.input), "
        "zero_point 38 (at a.input)"
    )


def test_qparams_come_from_one_ordinary_calibration_per_side() -> None:
    """The moving average would drift if state carried over from run to run."""
    model = make_block()
    batches = awkward_batches()
    comparison = compare_with_torch_ao(model, iter(batches), "moving-average", repeats=2)
    plain = calibrate(model, batches, observer="moving-average")
    for key, (scale, zero_point) in plain.qparams().items():
        torch.testing.assert_close(comparison.result.qparams()[key][0], scale, **EXACT)
        torch.testing.assert_close(comparison.result.qparams()[key][1], zero_point, **EXACT)
    expected = reference(
        model, [lambda m, x=x: m(x) for x in batches], ao.MovingAverageMinMaxObserver
    )
    for key, observer in expected.items():
        scale, zero_point = observer.calculate_qparams()
        torch.testing.assert_close(comparison.reference.qparams()[key][0], scale, **EXACT)
        torch.testing.assert_close(comparison.reference.qparams()[key][1], zero_point, **EXACT)
    for side in ("tritonobs", "torch.ao"):
        for run in comparison.runs[side]:
            assert run.observers > 0 and run.overhead > 0
            assert run.observers + run.overhead < run.total


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"repeats must be at least 1; got 0"):
        compare_with_torch_ao(make_block(), awkward_batches(), repeats=0)
    with pytest.raises(ValueError, match=r"unknown observer 'minimax'"):
        compare_with_torch_ao(make_block(), awkward_batches(), "minimax")
