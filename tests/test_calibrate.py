"""tritonobs.calibrate: qparams equal to torch.ao observers fed by plain hooks, save/load exactness,
hooks always removed, clear errors on bad input."""

from __future__ import annotations

import importlib
import json
import re
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.ao.quantization.observer as ao
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import tritonobs
from tritonobs.calibrate import (
    BatchTypeError,
    CalibrationError,
    CalibrationResult,
    DeviceMismatchError,
    EmptyBatchesError,
    NoTargetModulesError,
    calibrate,
    observer_factory,
)

EXACT = {"atol": 0.0, "rtol": 0.0}


class Block(nn.Module):
    """Linear layers at two depths, one fed through a non-contiguous view."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(5, 7)
        self.inner = nn.Sequential(nn.ReLU(), nn.Linear(7, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.inner(h.transpose(-1, -2).transpose(-1, -2))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(3, 6)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.a(left) + self.b(right)


def make_block(seed: int = 0) -> Block:
    torch.manual_seed(seed)
    return Block()


def awkward_batches(seed: int = 1) -> list[torch.Tensor]:
    """Odd sizes, a single row, a 3-d batch and an outlier."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randn(3, 5, generator=gen), torch.randn(1, 5, generator=gen)]
    batches.append(torch.randn(2, 3, 5, generator=gen) * 4)
    batches.append(torch.randn(7, 5, generator=gen) + 1.5)
    return batches


def reference(
    model: nn.Module,
    calls: Iterable[Callable[[nn.Module], Any]],
    make: Callable[[], nn.Module],
    role: str = "input",
) -> dict[str, nn.Module]:
    """torch.ao-style observers fed by plain hooks (no tritonobs.calibrate code): one per Linear."""
    observers: dict[str, nn.Module] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            observer = observers[f"{name}.{role}"] = make()
            if role == "input":
                handles.append(module.register_forward_pre_hook(lambda m, a, o=observer: o(a[0])))
            else:
                handles.append(module.register_forward_hook(lambda m, a, y, o=observer: o(y)))
    with torch.no_grad():
        for call in calls:
            call(model)
    for handle in handles:
        handle.remove()
    return observers


def assert_same_qparams(
    result: CalibrationResult, expected: dict[str, nn.Module], scale_tol=EXACT, zp_tol=EXACT
) -> None:
    qparams = result.qparams()
    assert sorted(qparams) == sorted(expected)
    for key, observer in expected.items():
        scale, zero_point = observer.calculate_qparams()
        torch.testing.assert_close(qparams[key][0], scale, **scale_tol)
        torch.testing.assert_close(qparams[key][1], zero_point, **zp_tol)


def hooks_left(model: nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks
    ]


REFERENCE_OBSERVERS = {
    "minmax": ao.MinMaxObserver,
    "moving-average": ao.MovingAverageMinMaxObserver,
    "per-channel": ao.PerChannelMinMaxObserver.with_args(ch_axis=-1),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_OBSERVERS))
def test_short_names_match_torch_ao(name: str) -> None:
    model = make_block()
    batches = awkward_batches()
    result = calibrate(model, batches, observer=name)
    expected = reference(model, [lambda m, x=x: m(x) for x in batches], REFERENCE_OBSERVERS[name])
    assert_same_qparams(result, expected)
    assert [result[k].calls for k in result] == [len(batches)] * 2
    for key, observer in expected.items():
        torch.testing.assert_close(result[key].observer.min_val, observer.min_val, **EXACT)
        torch.testing.assert_close(result[key].observer.max_val, observer.max_val, **EXACT)
    assert hooks_left(model) == []


def test_histogram_observer_matches_torch_ao() -> None:
    model = make_block()
    batches = awkward_batches()[:1]
    factory = tritonobs.HistogramObserver.with_args(bins=64)
    result = calibrate(model, batches, observer=factory)
    expected = reference(model, [lambda m: m(batches[0])], ao.HistogramObserver.with_args(bins=64))
    assert all(isinstance(o, tritonobs.HistogramObserver) for o in result.observers.values())
    for key, observer in expected.items():
        torch.testing.assert_close(result[key].observer.histogram, observer.histogram, **EXACT)
    assert_same_qparams(result, expected)


def test_factory_with_args_weights_and_outputs() -> None:
    model = make_block()
    batches = awkward_batches()
    factory = tritonobs.MinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
    )
    result = calibrate(model, batches, observer=factory, weights=True, outputs=True)
    assert list(result) == [
        "proj.input",
        "proj.weight",
        "proj.output",
        "inner.1.input",
        "inner.1.weight",
        "inner.1.output",
    ]
    calls = [lambda m, x=x: m(x) for x in batches]
    ref_factory = ao.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    inputs = reference(model, calls, ref_factory)
    outputs = reference(model, calls, ref_factory, role="output")
    weights = {}
    for name in ("proj", "inner.1"):
        weights[f"{name}.weight"] = ao.default_per_channel_weight_observer()
        weights[f"{name}.weight"](model.get_submodule(name).weight)
    assert_same_qparams(result, {**inputs, **outputs, **weights})
    assert result["proj.weight"].calls == 1


@pytest.mark.parametrize(
    "make_batch",
    [
        pytest.param(lambda left, right: (left, right), id="tuple"),
        pytest.param(lambda left, right: [left, right], id="list"),
        pytest.param(lambda left, right: {"left": left, "right": right}, id="dict"),
    ],
)
def test_batch_kinds(make_batch: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
    torch.manual_seed(0)
    model = TwoInputs()
    pairs = [(torch.randn(2, 4), torch.randn(2, 3)), (torch.randn(5, 4), torch.randn(5, 3))]
    result = calibrate(
        model, [make_batch(left, right) for left, right in pairs], observer="per-channel"
    )
    calls = [lambda m, a=a, b=b: m(a, b) for a, b in pairs]
    assert_same_qparams(result, reference(model, calls, REFERENCE_OBSERVERS["per-channel"]))


def test_runs_in_eval_and_inference_mode_and_restores_modes() -> None:
    seen = []

    class Probe(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_inference_mode_enabled(), self.training))
            return super().forward(x)

    model = nn.Sequential(Probe(5, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[2].eval()
    result = calibrate(model, awkward_batches(), observer="per-channel")
    assert seen == [(True, False)] * 4
    assert [m.training for m in model.modules()] == [True, True, True, False]
    # Buffers made under inference mode were replaced: in-place updates work afterwards.
    observer = result["0.input"].observer
    assert not observer.min_val.is_inference()
    observer(torch.full((1, 5), -100.0))
    torch.testing.assert_close(observer.min_val, torch.full((5,), -100.0), **EXACT)


def test_targets_predicate_and_max_batches() -> None:
    model = make_block()
    consumed = []

    def stream() -> Iterator[torch.Tensor]:
        for x in awkward_batches():
            consumed.append(x)
            yield x

    result = calibrate(
        model, stream(), targets=lambda name, m: name == "inner.1", max_batches=2, progress=False
    )
    assert list(result) == ["inner.1.input"]
    assert len(consumed) == 2 and result.batches == 2
    expected = reference(model, [lambda m, x=x: m(x) for x in consumed], ao.MinMaxObserver)
    assert_same_qparams(result, {"inner.1.input": expected["inner.1.input"]})


def test_module_that_never_runs_warns_and_has_no_qparams() -> None:
    model = make_block()
    model.unused = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match=r"1 observed tensors saw no data.*unused\.input"):
        result = calibrate(model, awkward_batches())
    assert result["unused.input"].calls == 0
    assert "unused.input" not in result.qparams()
    assert result.statistics()["unused.input"]["min"] is None


def test_statistics_and_table() -> None:
    model = make_block()
    batches = awkward_batches()
    batches[0][0, 0] = float("nan")
    result = calibrate(model, batches)
    stats = result.statistics()
    seen = torch.cat([b.reshape(-1) for b in batches])
    finite = seen[seen.isfinite()]
    assert stats["proj.input"]["min"] == finite.min().item()
    assert stats["proj.input"]["max"] == finite.max().item()
    assert stats["proj.input"]["nonfinite"] == 1
    assert stats["proj.input"]["calls"] == 4 and stats["proj.input"]["seconds"] > 0
    assert result.observer_seconds == pytest.approx(sum(s["seconds"] for s in stats.values()))
    table = result.table().splitlines()
    assert table[0].split() == [
        "layer",
        "role",
        "calls",
        "min",
        "max",
        "scale",
        "zero_point",
        "time",
        "ms",
    ]
    row = table[2].split()
    scale, zero_point = result.qparams()["proj.input"]
    assert row[:3] == ["proj", "input", "4"]
    assert row[5:7] == [f"{scale.item():.5g}", str(zero_point.item())]
    assert re.fullmatch(
        r"2 observed tensors, 4 batches, observers \d+\.\d ms, "
        r"calibrate overhead \d+\.\d\d ms, total \d+\.\d\d s",
        table[-1],
    )


class FakeClock:
    """Stands in for ``time.perf_counter``: time moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_observer(clock: FakeClock, seconds: float) -> Callable[[], nn.Module]:
    """A factory of MinMaxObservers whose forward takes exactly ``seconds`` of ``clock``."""

    class Slow(tritonobs.MinMaxObserver):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            clock.now += seconds
            return super().forward(x)

    return Slow


def test_observer_time_and_calibrate_overhead_are_apart(monkeypatch) -> None:
    """Observer time is the observers' forward only: with a clock that moves only inside them,
    the observers take all of the total and calibrate's own overhead is zero."""
    clock = FakeClock()
    monkeypatch.setattr(
        importlib.import_module("tritonobs.calibrate.session"), "perf_counter", clock
    )
    result = calibrate(make_block(), awkward_batches(), observer=slow_observer(clock, 0.25))
    assert [(result[k].calls, result[k].seconds) for k in result] == [(4, 1.0), (4, 1.0)]
    assert (result.observer_seconds, result.overhead_seconds, result.seconds) == (2.0, 0.0, 2.0)
    assert result.table().splitlines()[-1] == (
        "2 observed tensors, 4 batches, observers 2000.0 ms, calibrate overhead 0.00 ms, "
        "total 2.00 s"
    )


def test_calibrate_overhead_is_part_of_the_total() -> None:
    result = calibrate(make_block(), awkward_batches(), observer="minmax")
    assert result.overhead_seconds is not None and result.overhead_seconds > 0
    assert result.observer_seconds + result.overhead_seconds < result.seconds


def test_cuda_timing_reads_events_only_at_the_end(monkeypatch) -> None:
    """On CUDA each observer call is timed by a pair of events; no event is waited for while
    calibrating, and the last one once at the end."""
    clock = FakeClock()
    calibrate_module = importlib.import_module("tritonobs.calibrate.session")
    monkeypatch.setattr(calibrate_module, "perf_counter", clock)

    class FakeEvent:
        made: list[FakeEvent] = []

        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.at: float | None = None
            self.waited = False
            FakeEvent.made.append(self)

        def record(self) -> None:
            self.at = clock.now

        def synchronize(self) -> None:
            self.waited = True

        def elapsed_time(self, end: FakeEvent) -> float:
            return (end.at - self.at) * 1e3

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    entry = calibrate_module.ObservedTensor("proj", "input", slow_observer(clock, 0.5)())
    tally = calibrate_module._CudaTally(entry)
    for _ in range(3):
        tally.input_hook(nn.Identity(), (torch.ones(2),), {})
    assert len(FakeEvent.made) == 6 and not any(event.waited for event in FakeEvent.made)
    tally.finish()
    assert (entry.calls, entry.seconds, tally.overhead) == (3, 1.5, 0.0)
    assert [event.waited for event in FakeEvent.made] == [False] * 5 + [True]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_calibration_timings() -> None:
    model = make_block().cuda()
    batches = awkward_batches()
    result = calibrate(model, batches, observer=ao.MinMaxObserver)
    assert all(result[k].seconds > 0 for k in result)
    assert result.observer_seconds + result.overhead_seconds < result.seconds
    expected = reference(make_block(), [lambda m, x=x: m(x) for x in batches], ao.MinMaxObserver)
    for key, observer in expected.items():
        scale, zero_point = result.qparams()[key]
        torch.testing.assert_close(scale.cpu(), observer.calculate_qparams()[0], **EXACT)
        torch.testing.assert_close(zero_point.cpu(), observer.calculate_qparams()[1], **EXACT)


def test_observer_hooks_still_run() -> None:
    """calibrate calls an observer's forward directly only when the observer has no hooks."""
    seen = []

    def hooked() -> nn.Module:
        observer = tritonobs.MinMaxObserver()
        observer.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
        return observer

    batches = awkward_batches()
    calibrate(make_block(), batches, observer=hooked)
    assert seen[::2] == [x.shape for x in batches]


def test_input_passed_by_keyword() -> None:
    class KeywordCall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(input=x)

    batches = awkward_batches()
    result = calibrate(KeywordCall(), batches)
    expected = ao.MinMaxObserver()
    for x in batches:
        expected(x)
    assert_same_qparams(result, {"proj.input": expected})


@pytest.mark.parametrize(
    "observer",
    [
        pytest.param("per-channel", id="per-channel"),
        pytest.param(
            tritonobs.MinMaxObserver.with_args(
                dtype=torch.qint8, quant_min=-100, quant_max=100, reduce_range=True
            ),
            id="custom-range-reduced",
        ),
        pytest.param(
            tritonobs.MovingAverageMinMaxObserver.with_args(averaging_constant=0.5), id="ema"
        ),
        pytest.param(tritonobs.HistogramObserver.with_args(bins=32), id="histogram"),
        pytest.param(ao.PerChannelMinMaxObserver.with_args(ch_axis=-1), id="torch-ao"),
    ],
)
def test_save_load_restores_observers_exactly(tmp_path, observer: Any) -> None:
    model = make_block()
    batches = awkward_batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reduce_range deprecation
        tritonobs_observer = isinstance(observer_factory(observer)(), tritonobs.ObserverBase)
        if tritonobs_observer:
            batches[1][0, 2] = float("inf")  # counted in nonfinite_count, a non-persistent buffer
        result = calibrate(
            model, batches, observer=observer, weights=True, metadata={"note": "round trip"}
        )
    tensors_path, json_path = result.save(tmp_path / "sub" / "qparams.safetensors")
    assert (tensors_path.name, json_path.name) == ("qparams.safetensors", "qparams.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = CalibrationResult.load(json_path)
    assert list(loaded) == list(result)
    assert (loaded.batches, loaded.seconds, loaded.overhead_seconds, loaded.metadata) == (
        result.batches,
        result.seconds,
        result.overhead_seconds,
        {"note": "round trip"},
    )
    for key in result:
        ours, theirs = result[key], loaded[key]
        assert type(theirs.observer) is type(ours.observer)
        assert (theirs.module, theirs.role, theirs.calls, theirs.seconds) == (
            ours.module,
            ours.role,
            ours.calls,
            ours.seconds,
        )
        for attr in ("dtype", "qscheme", "quant_min", "quant_max", "reduce_range", "ch_axis"):
            assert getattr(theirs.observer, attr, None) == getattr(ours.observer, attr, None)
        buffers = dict(ours.observer.named_buffers())
        assert sorted(dict(theirs.observer.named_buffers())) == sorted(buffers)
        for name, buffer in theirs.observer.named_buffers():
            assert buffer.dtype == buffers[name].dtype
            torch.testing.assert_close(buffer, buffers[name], **EXACT)
    for key, (scale, zero_point) in result.qparams().items():
        loaded_scale, loaded_zero_point = loaded.qparams()[key]
        torch.testing.assert_close(loaded_scale, scale, **EXACT)
        torch.testing.assert_close(loaded_zero_point, zero_point, **EXACT)
    if tritonobs_observer:
        assert int(loaded["proj.input"].observer.nonfinite_count) == 1
    # The saved scale/zero_point tensors are what consumers read without rebuilding observers.
    from safetensors.torch import load_file

    saved = load_file(str(tensors_path))
    for key, (scale, zero_point) in result.qparams().items():
        assert torch.equal(saved[f"{key}.scale"], scale)
        assert torch.equal(saved[f"{key}.zero_point"], zero_point)


def test_load_refuses_other_classes_and_formats(tmp_path) -> None:
    result = calibrate(make_block(), awkward_batches())
    _, json_path = result.save(tmp_path / "q")
    document = json.loads(json_path.read_text())
    document["entries"][0]["observer"] = "subprocess:Popen"
    json_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"refusing to load observer class 'subprocess:Popen'"):
        CalibrationResult.load(tmp_path / "q")
    document["version"] = 99
    json_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"version=99"):
        CalibrationResult.load(tmp_path / "q.safetensors")


def test_load_file_saved_without_overhead(tmp_path) -> None:
    """Files written before calibrate measured its overhead load with it unknown."""
    _, json_path = calibrate(make_block(), awkward_batches()).save(tmp_path / "q")
    document = json.loads(json_path.read_text())
    del document["overhead_seconds"]
    json_path.write_text(json.dumps(document))
    loaded = CalibrationResult.load(json_path)
    assert loaded.overhead_seconds is None
    assert ", calibrate overhead not recorded, total " in loaded.table().splitlines()[-1]


def test_sync_calls_sync_observers_after_the_batches(monkeypatch) -> None:
    calls = []

    def sync_observers(module_or_observers: Any, group: Any = None) -> None:
        observers = list(module_or_observers)
        calls.append((observers, group, [int(o.min_val.isfinite()) for o in observers]))

    fake = types.ModuleType("tritonobs.distributed")
    fake.sync_observers = sync_observers
    monkeypatch.setitem(sys.modules, "tritonobs.distributed", fake)
    group = object()
    result = calibrate(make_block(), awkward_batches(), sync=True, group=group)
    assert len(calls) == 1
    observers, passed_group, initialised = calls[0]
    assert [id(o) for o in observers] == [id(o) for o in result.observers.values()]
    assert passed_group is group and initialised == [1, 1]
    calibrate(make_block(), awkward_batches())
    assert len(calls) == 1


def shard(rank: int) -> list[torch.Tensor]:
    """Rank-specific batches with rank-specific ranges."""
    return [x * (rank + 1) + rank for x in awkward_batches(seed=10 + rank)]


def _sync_worker(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out_dir}/store",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    result = calibrate(make_block(), shard(rank), observer="per-channel", sync=True)
    dist.destroy_process_group()
    result.save(f"{out_dir}/rank{rank}")


@pytest.mark.distributed
def test_sync_merges_two_gloo_ranks(tmp_path) -> None:
    """Each rank calibrates its shard with sync=True; both end with the qparams of one process
    that saw both shards (torch.ao observers fed the union)."""
    context = mp.start_processes(
        _sync_worker, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2 ranks did not finish within 240 s")
    model = make_block()
    union = shard(0) + shard(1)
    expected = reference(
        model, [lambda m, x=x: m(x) for x in union], REFERENCE_OBSERVERS["per-channel"]
    )
    for rank in range(2):
        assert_same_qparams(CalibrationResult.load(tmp_path / f"rank{rank}"), expected)


def test_progress_bar_only_when_asked_or_on_a_tty(capsys) -> None:
    calibrate(make_block(), awkward_batches(), desc="cal-bar")
    assert capsys.readouterr().err == ""  # captured stderr is not a TTY
    calibrate(make_block(), awkward_batches(), progress=True, desc="cal-bar")
    err = capsys.readouterr().err
    assert "cal-bar" in err and "4/4" in err


def test_observer_factory_names() -> None:
    made = observer_factory("per-channel")()
    assert isinstance(made, tritonobs.PerChannelMinMaxObserver) and made.ch_axis == -1
    assert type(observer_factory("histogram", torch_ao=True)()) is ao.HistogramObserver
    with pytest.raises(ValueError, match=r"unknown observer 'minimax'; choose one of minmax"):
        observer_factory("minimax")
    with pytest.raises(TypeError, match=r"got int"):
        observer_factory(3)  # type: ignore[arg-type]


# Bad input: a specific exception, a message naming the problem, no hook left behind.


def test_no_target_modules() -> None:
    model = nn.Sequential(nn.ReLU(), nn.Conv1d(2, 2, 1))
    with pytest.raises(NoTargetModulesError, match=r"Sequential has no module selected by targets"):
        calibrate(model, awkward_batches())
    assert hooks_left(model) == []


@pytest.mark.parametrize("batches", [[], iter(())], ids=["list", "generator"])
def test_empty_batches(batches: Iterable[Any]) -> None:
    model = make_block()
    with pytest.raises(EmptyBatchesError, match=r"batches yielded no batch"):
        calibrate(model, batches)
    assert hooks_left(model) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("some text", r"batch 1 is a str"),
        (3.0, r"batch 1 is a float"),
        ((torch.ones(1, 5), 2), r"batch 1\[1\] is a int"),
        ({"input_ids": [[1, 2]]}, r"batch 1\['input_ids'\] is a list.*return_tensors='pt'"),
    ],
    ids=["str", "float", "tuple-item", "dict-value"],
)
def test_batch_of_wrong_type(bad: Any, message: str) -> None:
    model = make_block()
    with pytest.raises(BatchTypeError, match=message) as info:
        calibrate(model, [torch.ones(2, 5), bad])
    assert isinstance(info.value, TypeError) and isinstance(info.value, CalibrationError)
    assert hooks_left(model) == []


def test_device_mismatch() -> None:
    model = make_block()
    with pytest.raises(
        DeviceMismatchError, match=r"device='meta' was asked but the model is on cpu"
    ):
        calibrate(model, awkward_batches(), device="meta")
    model.inner.to("meta")
    with pytest.raises(DeviceMismatchError, match=r"on one device.*cpu, meta"):
        calibrate(model, awkward_batches())
    assert hooks_left(model) == []


def test_hooks_removed_when_the_model_raises() -> None:
    model = make_block()
    batches = [torch.ones(2, 5), torch.ones(2, 4)]  # wrong width: the Linear raises
    with pytest.raises(RuntimeError, match=r"shapes cannot be multiplied"):
        calibrate(model, batches)
    assert hooks_left(model) == []
    assert model(torch.ones(1, 5)).shape == (1, 3)


def test_hooks_removed_on_keyboard_interrupt() -> None:
    model = make_block()
    model.train()

    def interrupted() -> Iterator[torch.Tensor]:
        yield torch.ones(2, 5)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(model, interrupted(), progress=True)
    assert hooks_left(model) == []
    assert all(m.training for m in model.modules())


def test_existing_hooks_are_kept() -> None:
    model = make_block()
    handle = model.proj.register_forward_hook(lambda m, a, y: None)
    calibrate(model, awkward_batches())
    assert list(model.proj._forward_hooks) == [handle.id]
    assert not model.proj._forward_pre_hooks
