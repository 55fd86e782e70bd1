"""Resumable calibration: a run stopped at any moment and resumed ends bit for bit where an
uninterrupted run ends; broken or foreign checkpoints are refused with the file or the difference
named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import tritonobs._cli_calibrate as cli_calibrate
from tritonobs import AmaxHistogramObserver
from tritonobs.calibrate import (
    CheckpointError,
    CheckpointMismatchError,
    calibrate,
)
from tritonobs.cli import main

# amax-histogram with fewer bins than its default 2048: the same code, a faster entropy search.
OBSERVERS = [
    *("minmax", "moving-average", "per-channel", "histogram"),
    AmaxHistogramObserver.with_args(bins=128, start_bin=16),
]
CLI_ARGS = [
    *("calibrate", "--batches", "4", "--batch-size", "2", "--seq-len", "16"),
    *("--observer", "per-channel", "--quiet"),
]


class Branchy(nn.Module):
    """``late`` runs only on batches of more than 4 rows: its observers are still empty (a
    per-channel observer's ``[0]``-shaped min/max) at an early checkpoint."""

    def __init__(self, width: int = 7) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(5, width)
        self.inner = nn.Linear(width, 3)
        self.late = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4:
            return self.late(x)
        return self.inner(torch.relu(self.proj(x)))


def make_batches() -> list[torch.Tensor]:
    """Six batches: growing ranges (histograms re-bin), a NaN and an inf (``nonfinite_count``),
    and the last two large enough to run ``late``."""
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(3, 5, generator=gen) * (1 + i) for i in range(4)]
    batches[1][0, 2] = float("nan")
    batches[2][1, 1] = float("inf")
    batches += [torch.randn(6, 5, generator=gen) * 3, torch.randn(5, 5, generator=gen) - 2]
    return batches


class Interrupted(Sequence[torch.Tensor]):
    """The batches, with the same length, but the iteration does something before batch ``at``:
    raises (a crash) or sends this process a signal."""

    def __init__(self, batches: list[torch.Tensor], at: int, signum: int | None = None) -> None:
        self.batches, self.at, self.signum = batches, at, signum

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: Any) -> Any:
        return self.batches[index]

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i, batch in enumerate(self.batches):
            if i == self.at:
                if self.signum is None:
                    raise RuntimeError("crash")
                os.kill(os.getpid(), self.signum)
            yield batch


def saved(result: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What ``result.save`` writes: the tensors and the JSON document."""
    tensors_path, json_path = result.save(path)
    return load_file(str(tensors_path)), json.loads(json_path.read_text())


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


def assert_same_result(actual: Any, expected: Any, tmp_path: Path) -> None:
    """Equal saved tensors (qparams and every observer buffer), batch and call counts."""
    actual_tensors, actual_json = saved(actual, tmp_path / "actual")
    expected_tensors, expected_json = saved(expected, tmp_path / "expected")
    assert_same_tensors(actual_tensors, expected_tensors)
    assert actual_json["batches"] == expected_json["batches"]
    calls = [
        [(e["key"], e["calls"]) for e in doc["entries"]] for doc in (actual_json, expected_json)
    ]
    assert calls[0] == calls[1]


def run(batches: Any, observer: str = "minmax", **options: Any) -> Any:
    return calibrate(
        Branchy(), batches, observer, weights=True, outputs=True, progress=False, **options
    )


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "checkpoint.json").read_text())


@pytest.mark.parametrize(
    "observer",
    OBSERVERS,
    ids=["minmax", "moving-average", "per-channel", "histogram", "amax-histogram"],
)
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, observer) -> None:
    batches = make_batches()
    expected = run(batches, observer)
    folder = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="crash"):
        run(Interrupted(batches, at=3), observer, checkpoint=folder, checkpoint_every=2)
    assert manifest(folder)["batches"] == 2
    resumed = run(batches, observer, checkpoint=folder, checkpoint_every=2, resume=True)
    assert resumed.batches == 6
    assert_same_result(resumed, expected, tmp_path)


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)]
)
def test_a_signal_writes_a_last_checkpoint_after_the_batch_in_progress(
    tmp_path, signum, raised
) -> None:
    """The signal arrives before batch 1; batch 1 still runs, then the checkpoint (2 batches,
    ``late``'s per-channel observers still ``[0]``-shaped) and the exception. The previous
    handler is back afterwards, and resuming gives the uninterrupted result."""
    batches = make_batches()
    expected = run(batches, "per-channel")
    folder = tmp_path / "ckpt"
    received = []
    previous = signal.signal(signum, lambda *args: received.append(args))
    try:
        handler = signal.getsignal(signum)
        with pytest.raises(raised) as stopped:
            run(Interrupted(batches, at=1, signum=signum), "per-channel", checkpoint=folder)
        assert signal.getsignal(signum) is handler
    finally:
        signal.signal(signum, previous)
    assert received == []
    if raised is SystemExit:
        assert stopped.value.code == 128 + signal.SIGTERM
    written = manifest(folder)
    assert written["batches"] == 2
    state = load_file(str(folder / written["tensors"]))
    assert state["late.input.state.min_val"].shape == (0,)
    assert state["proj.input.state.min_val"].shape == (5,)
    resumed = run(batches, "per-channel", checkpoint=folder, resume=True)
    assert_same_result(resumed, expected, tmp_path)


def test_checkpoint_files_and_counts(tmp_path) -> None:
    """Every N batches and after the last one; one tensors file and no temporary file left;
    resuming a finished run runs no batch and gives the same result."""
    batches = make_batches()
    folder = tmp_path / "ckpt"
    first = run(batches, checkpoint=folder, checkpoint_every=4)
    written = manifest(folder)
    assert written["batches"] == 6
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "state-00000006.safetensors",
    ]
    assert {key: e["calls"] for key, e in written["entries"].items()} == {
        key: first[key].calls for key in first
    }
    again = run(batches, checkpoint=folder, resume=True)
    assert_same_result(again, first, tmp_path)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path) -> None:
    batches = make_batches()
    result = run(batches, checkpoint=tmp_path / "new", resume=True)
    assert_same_result(result, run(batches), tmp_path)


def test_an_existing_checkpoint_is_not_overwritten_without_resume(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    run(make_batches(), checkpoint=folder)
    before = (folder / "checkpoint.json").read_bytes()
    with pytest.raises(CheckpointError, match="holds an earlier calibration.*resume=True"):
        run(make_batches(), checkpoint=folder)
    assert (folder / "checkpoint.json").read_bytes() == before


def test_fewer_batches_than_the_checkpoint_folded_in(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    batches = make_batches()
    run(batches, checkpoint=folder)

    class Short(Interrupted):
        def __iter__(self) -> Iterator[torch.Tensor]:
            yield from self.batches[:3]

    with pytest.raises(CheckpointError, match="ended after 3, but the checkpoint .* folded in 6"):
        run(Short(batches, at=0), checkpoint=folder, resume=True)


def test_truncated_or_corrupt_files_are_named(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    run(make_batches(), checkpoint=folder)
    tensors = folder / manifest(folder)["tensors"]
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{tensors} is truncated or corrupt"):
        run(make_batches(), checkpoint=folder, resume=True)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{tensors} is truncated or corrupt"):
        run(make_batches(), checkpoint=folder, resume=True)
    tensors.unlink()
    with pytest.raises(CheckpointError, match=f"{tensors}, named by"):
        run(make_batches(), checkpoint=folder, resume=True)
    json_path = folder / "checkpoint.json"
    json_path.write_text(json_path.read_text()[:100])
    with pytest.raises(CheckpointError, match=f"{json_path} is not a complete"):
        run(make_batches(), checkpoint=folder, resume=True)


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        (
            {"observer": "histogram"},
            "observers/proj.input/class: 'tritonobs.observer:MinMaxObserver' in the checkpoint, "
            "'tritonobs.histogram_observer:HistogramObserver' now",
        ),
        (
            {"observer": "amax-histogram", "method": "mse"},
            "observers/proj.input/class: 'tritonobs.observer:MinMaxObserver' in the checkpoint, "
            "'tritonobs.llm_calibrators:AmaxHistogramObserver' now",
        ),
        ({"max_batches": 5}, "batches: 6 in the checkpoint, 5 now"),
        ({"metadata": {"seq_len": 32}}, "metadata/seq_len: 16 in the checkpoint, 32 now"),
        (
            {"width": 8},
            "model/targets/proj: 'float32[7, 5]' in the checkpoint, 'float32[8, 5]' now",
        ),
        ({"weights": False}, "observers/proj.weight: only in the checkpoint"),
    ],
)
def test_a_checkpoint_of_another_calibration_is_refused(tmp_path, change, difference) -> None:
    folder = tmp_path / "ckpt"
    batches = make_batches()
    options: dict[str, Any] = {"weights": True, "metadata": {"seq_len": 16}}
    calibrate(Branchy(), batches, checkpoint=folder, progress=False, **options)
    options.update(change)
    model = Branchy(options.pop("width", 7))
    with pytest.raises(CheckpointMismatchError, match="written by another calibration") as refused:
        calibrate(model, batches, checkpoint=folder, resume=True, progress=False, **options)
    assert difference in str(refused.value)


# The CLI, killed by SIGKILL while it writes its second checkpoint: the tensors file of that
# checkpoint is on disk, its manifest not yet, so the first checkpoint is still the committed one.
PAUSED_CLI = """
import sys, time
from pathlib import Path
from tritonobs.calibrate import checkpoint
from tritonobs.cli import main
write, written = checkpoint._write_atomically, []
def paused(path, data):
    written.append(path.name)
    if len(written) == 4:
        Path(sys.argv[1]).touch()
        time.sleep(600)
    write(path, data)
checkpoint._write_atomically = paused
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("uninterrupted") / "qparams"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    return load_file(f"{out}.safetensors")


def test_cli_killed_mid_checkpoint_then_resumed_is_exact(tmp_path, request) -> None:
    folder, out, marker = tmp_path / "ckpt", tmp_path / "qparams", tmp_path / "paused"
    args = [*CLI_ARGS, "--out", str(out), "--checkpoint", str(folder), "--checkpoint-every", "1"]
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(marker), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # The uninterrupted run, here while the subprocess starts.
        uninterrupted = request.getfixturevalue("uninterrupted")
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the CLI never reached its second checkpoint"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert manifest(folder)["batches"] == 1
    assert (folder / "state-00000002.safetensors").exists()
    assert not out.with_suffix(".safetensors").exists()
    assert main([*args, "--resume"]) == 0
    assert_same_tensors(load_file(f"{out}.safetensors"), uninterrupted)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "state-00000004.safetensors",
    ]


def test_cli_sigterm_exits_143_and_resumes(tmp_path, monkeypatch, capsys, uninterrupted) -> None:
    make = cli_calibrate.make_batches
    monkeypatch.setattr(
        cli_calibrate,
        "make_batches",
        lambda *a, **k: Interrupted(make(*a, **k), at=2, signum=signal.SIGTERM),
    )
    folder, out = tmp_path / "ckpt", tmp_path / "qparams"
    args = [*CLI_ARGS, "--out", str(out), "--checkpoint", str(folder)]
    assert main(args) == 128 + signal.SIGTERM
    assert "the same command with --resume continues" in capsys.readouterr().err
    assert manifest(folder)["batches"] == 3
    monkeypatch.setattr(cli_calibrate, "make_batches", make)
    assert main([*args, "--resume"]) == 0
    assert_same_tensors(load_file(f"{out}.safetensors"), uninterrupted)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--resume needs --checkpoint DIR"),
        (["--checkpoint-every", "2"], "--checkpoint-every needs --checkpoint DIR"),
        (
            ["--checkpoint", "x", "--compare-torch-ao"],
            "--compare-torch-ao runs several calibrations; it cannot take --checkpoint",
        ),
    ],
)
def test_cli_flag_combinations(capsys, extra, message) -> None:
    assert main([*CLI_ARGS, *extra]) == 1
    assert capsys.readouterr().err == f"tritonobs calibrate: error: {message}\n"
