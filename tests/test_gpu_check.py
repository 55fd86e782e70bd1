"""``benchmarks/gpu_check.sh --dry-run``: the GPU script's whole path on CPU, one JSON out.

The dry run runs tests/test_cuda.py through Triton's interpreter on tiny shapes and the
``gpu_check_dry`` benchmark profile; this test checks the JSON it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECORD_KEYS = {
    "device",
    "torch",
    "triton",
    "tritonobs",
    "bytes_moved",
    "gbps",
    "copy_gbps",
    "copy_fraction",
    "speedup_vs_torch_ao",
    "time_ms",
}


def test_gpu_check_dry_run_writes_one_json(tmp_path):
    output = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert output.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    tests, benchmarks = report["tests"], report["benchmarks"]
    assert result.returncode == 0 and report["ok"], (
        tests["output_tail"][-3000:] + benchmarks.get("output_tail", "")[-3000:]
    )
    assert report["environment"]["dry_run"] is True
    assert report["environment"]["gpu"] is None

    # Every CUDA test ran (on CPU, interpreted) and passed; none was skipped.
    assert tests["summary"]["failed"] == tests["summary"]["error"] == 0
    assert tests["summary"]["skipped"] == 0
    names = {case["name"].split("[")[0] for case in tests["cases"]}
    assert "test_forward_has_no_host_sync_and_matches_torch_ao" in names
    assert not any("graph" in name for name in names)

    # Every benchmark file contributed records for both providers, with the full extra_info.
    records = benchmarks["records"]
    files = {Path(r["fullname"].split("::")[0]).name for r in records}
    assert files == {p.name for p in (ROOT / "benchmarks").glob("test_bench_*.py")}
    # Peer libraries (ModelOpt, llm-compressor) are providers too where they are installed.
    assert {"torch.ao", "tritonobs"} <= {r["provider"] for r in records}
    for record in records:
        assert RECORD_KEYS <= record.keys()
        assert record["tritonobs_backend"] == "triton"
        if record["torch_ao_ms"] is None:
            # The LLM calibrators' ops alone have no torch.ao (or peer) counterpart.
            assert record["benchmark"].startswith("op ") and record["speedup_vs_torch_ao"] is None
        else:
            assert record["speedup_vs_torch_ao"] == record["torch_ao_ms"] / record["time_ms"]
    assert "| benchmark |" in benchmarks["table_markdown"]
    assert len(benchmarks["targets"]) == 8
