"""``benchmarks/gpu_check.sh --dry-run``: the GPU script's whole path on CPU, one JSON out.

The dry run installs a wheel folder with no network (here one made from this environment's own
pytest, pytest-benchmark and setuptools, as ``benchmarks/fetch_wheels.sh`` would fetch them),
records every kernel variant and compiles two of them for sm_90 in a process pool, runs
tests/test_cuda.py through Triton's interpreter on tiny shapes and the ``gpu_check_dry``
benchmark profile; this test checks the JSON it writes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.gpu_check import CUDA_ONLY_TESTS, WHEEL_REQUIREMENTS
from benchmarks.gpu_precompile import DRY_RUN_COMPILES

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


def _requirements_closure(names: tuple[str, ...]) -> set[str]:
    """The installed distributions ``names`` need, themselves included (markers evaluated)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def wheel_from_installed(name: str, folder: Path) -> None:
    """Pack the installed distribution ``name`` back into a pure-Python wheel in ``folder``."""
    dist = importlib.metadata.distribution(name)
    info = next(f for f in dist.files if f.name == "METADATA").parent
    skipped = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    files = [
        f
        for f in dist.files
        if not f.parts[0] == ".."
        and "__pycache__" not in f.parts
        and not (f.parent == info and f.name in skipped)
    ]
    stem = f"{canonicalize_name(name).replace('-', '_')}-{dist.version}"
    record = []
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as wheel:
        for file in files:
            data = dist.locate_file(file).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{file.as_posix()},sha256={digest.decode()},{len(data)}")
            wheel.writestr(file.as_posix(), data)
        record.append(f"{info.as_posix()}/RECORD,,")
        wheel.writestr(f"{info.as_posix()}/RECORD", "\n".join(record) + "\n")


def test_gpu_check_dry_run_writes_one_json(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in sorted(_requirements_closure(WHEEL_REQUIREMENTS)):
        wheel_from_installed(name, wheels)
    output = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--dry-run",
            f"--wheels={wheels}",
            str(output),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert output.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    tests, benchmarks = report["tests"], report["benchmarks"]
    assert result.returncode == 0 and report["ok"], (
        tests["output_tail"][-3000:] + benchmarks.get("output_tail", "")[-3000:]
    )
    environment = report["environment"]
    assert environment["dry_run"] is True and environment["gpu"] is None
    assert {"torch", "triton", "driver", "python"} <= environment.keys()

    # pytest, pytest-benchmark and setuptools came from the wheel folder, installed offline.
    install = report["install"]
    assert [a["returncode"] for a in install["actions"]] == [0]
    assert "--no-index" in install["actions"][0]["command"]
    for module in ("pytest", "pytest_benchmark", "setuptools"):
        assert Path(install["found"][module]).parents[1].name == "site", install["found"]
    assert Path(install["found"]["tritonobs"]) == ROOT / "kernels"

    # Every variant recorded; two compiled for sm_90 in the pool, the others counted.
    precompile = report["precompile"]
    assert precompile["returncode"] == 0, precompile["stderr"]
    assert precompile["failed"] == precompile["record_errors"] == []
    assert precompile["compiled"] == DRY_RUN_COMPILES
    assert precompile["skipped_dry_run"] == precompile["variants"] - DRY_RUN_COMPILES
    assert precompile["by_kernel"]["_aminmax_kernel"] >= 2

    # Every CUDA test ran (on CPU, interpreted) and passed; none was skipped.
    assert tests["summary"]["failed"] == tests["summary"]["error"] == 0
    assert tests["summary"]["skipped"] == 0
    names = {case["name"].split("[")[0] for case in tests["cases"]}
    assert "test_forward_has_no_host_sync_and_matches_torch_ao" in names
    assert "test_aminmax_handoff_stress_is_bitwise_exact" in names
    assert not any(cuda_only in name for name in names for cuda_only in CUDA_ONLY_TESTS)

    # Every benchmark file contributed records for both providers, with the full extra_info.
    records = benchmarks["records"]
    files = {Path(r["fullname"].split("::")[0]).name for r in records}
    assert files == {p.name for p in (ROOT / "benchmarks").glob("test_bench_*.py")}
    # Peer libraries (ModelOpt, llm-compressor) are providers too where they are installed.
    assert {"torch.ao", "tritonobs"} <= {r["provider"] for r in records}
    assert any("host_us" in record and "graph_ms" in record for record in records)
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
