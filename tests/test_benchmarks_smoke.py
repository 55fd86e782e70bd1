"""The benchmark suite stays runnable: every benchmark once on tiny shapes, and its report.

Performance itself is never asserted here (ratios are measured side by side by the benchmarks).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritonobs.bench import DATA_KINDS, make_input

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402  (benchmarks/report.py is a script, not a package module)


def test_every_op_has_a_benchmark():
    ops = {p.stem for p in (ROOT / "tritonobs" / "ops").glob("*.py") if not p.stem.startswith("_")}
    benchmarked = {
        p.stem.removeprefix("test_bench_") for p in (ROOT / "benchmarks").glob("test_bench_*.py")
    }
    # The LLM calibrators' ops are benchmarked together, against the peer libraries.
    peers = (ROOT / "benchmarks" / "test_bench_llm_calibrators.py").read_text()
    benchmarked |= {op for op in ops if f'"{op}"' in peers}
    assert ops <= benchmarked


def test_every_benchmark_runs_once_on_tiny_shapes():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "--bench-profile=tiny",
            "--benchmark-disable",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
    ran = {
        line.split("::")[0].split()[-1] for line in output.splitlines() if line.startswith("PASSED")
    }
    assert ran == {f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("test_bench_*.py")}
    # Every provider of issue 4 ran.
    for provider in ("torch.ao", "tritonobs", "torch.compile"):
        assert f"-{provider}" in output


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_make_input_distributions(kind):
    x = make_input(kind, (64, 1024), torch.bfloat16, torch.device("cpu"), seed=3)
    assert x.shape == (64, 1024) and x.dtype == torch.bfloat16
    assert torch.equal(x, make_input(kind, (64, 1024), torch.bfloat16, torch.device("cpu"), seed=3))
    assert not torch.equal(
        x, make_input(kind, (64, 1024), torch.bfloat16, torch.device("cpu"), seed=4)
    )
    channel_absmax = x.float().abs().amax(dim=0)
    if kind == "llm":
        # Two outlier channels (1024 / 512), a hundred times larger than the rest.
        top = channel_absmax.topk(3).values
        assert top[1] > 50 * channel_absmax.median() and top[2] < 10 * channel_absmax.median()
    if kind == "relu":
        assert x.min() == 0 and (x == 0).float().mean() > 0.4
    if kind == "student_t":
        # Heavy tails: far more mass beyond 5 standard units than a normal (about 6e-7).
        assert (x.float().abs() > 5).float().mean() > 1e-3


def _record(provider, time_ms, torch_ao_ms, **info):
    return {
        "case": info.get("case", "forward/MinMaxObserver/1024x1024/bf16"),
        "benchmark": "forward",
        "observer": "MinMaxObserver",
        "shape": "1024x1024",
        "numel": 1024 * 1024,
        "dtype": "bf16",
        "data": "llm",
        "device": "test CPU",
        "device_type": "cpu",
        "torch": "x",
        "triton": "y",
        "tritonobs": "z",
        "profile": "cpu",
        "provider": provider,
        "time_ms": time_ms,
        "torch_ao_ms": torch_ao_ms,
        "speedup_vs_torch_ao": torch_ao_ms / time_ms,
        "bytes_moved": 2 * 1024 * 1024,
        "gbps": 2 * 1024 * 1024 / (time_ms * 1e6),
        "copy_gbps": 10.0,
        "copy_fraction": 2 * 1024 * 1024 / (time_ms * 1e6) / 10.0,
    } | info


def test_report_table_targets_and_plot(tmp_path):
    records = [
        _record("torch.ao", 2.0, 2.0),
        _record("tritonobs", 0.5, 2.0),
        _record("torch.compile", 1.0, 2.0),
    ]
    data = {
        "datetime": "2026-11-28T12:00:00",
        "benchmarks": [
            {"name": f"test_forward[{r['provider']}]", "extra_info": r} for r in records
        ],
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    loaded, meta = report.load_records(path)
    text = report.markdown_report(loaded, meta)
    row = next(line for line in text.splitlines() if line.startswith("| forward |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # torch.ao ms, tritonobs ms, speedup, GB/s, % copy BW, torch.compile ms, compile speedup.
    assert cells[5:] == ["2", "0.5", "4.00x", "4.19", "42%", "1", "2.00x"]

    verdicts = {v["target"]: v for v in report.evaluate_targets(loaded)}
    assert verdicts["CPU: forward >= 1.0x torch.ao, every observer"]["status"] == "holds"
    bf16 = next(v for t, v in verdicts.items() if "bf16 input" in t)
    assert bf16["status"] == "holds" and bf16["worst"] == 4.0
    slower = [_record("tritonobs", 1.0, 2.0, case="forward/b")]
    bf16 = next(v for v in report.evaluate_targets(slower) if "bf16 input" in v["target"])
    assert bf16["status"] == "fails" and bf16["failing"] == ["forward/b"]
    assert all(v["status"] == "not measured" for v in report.evaluate_targets(loaded)[4:])

    png = tmp_path / "plot.png"
    report.plot(loaded, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
