"""The one-call GPU check behind ``benchmarks/gpu_check.sh`` (see that script for usage).

1. installs, with no network, what the machine may lack: the wheel folder (``.wheels/``, filled
   by ``benchmarks/fetch_wheels.sh``: pytest, pytest-benchmark, setuptools and their pure-Python
   dependencies) goes into a private folder with ``pip install --no-index --target``, put first on
   the children's ``PYTHONPATH``; this checkout is installed with ``pip install --no-index
   --no-deps -e .`` when it is not the importable tritonobs;
2. records torch, Triton, the CUDA driver and the GPU;
3. precompiles every kernel variant the tests and benchmarks launch, in parallel
   (``benchmarks/gpu_precompile.py``), into Triton's cache;
4. runs ``tests/test_cuda.py`` with the real Triton compiler (``TRITON_INTERPRET=0``): compiled
   kernels vs the torch references, every forward under
   ``torch.cuda.set_sync_debug_mode("error")``, > 2**31 elements, a handoff stress, CUDA-graph
   capture and replay vs eager;
5. runs the ``gpu_check`` benchmark profile ([8192, 8192] fp32/bf16, tritonobs vs torch.ao),
   stopping early if the time budget runs out;
6. writes ONE JSON file: environment, install, precompile, every test's outcome, every benchmark
   record, the results table and the performance targets' verdicts.

``--dry-run`` walks the same steps on CPU: the wheel install, the precompile's recording and a
few compiles for sm_90 (the rest counted), the tests through Triton's interpreter on tiny shapes
(no sync-debug mode; the tests that need CUDA itself deselected), the tiny benchmark profile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
# Benchmarks in priority order: those with a target first, in case the time budget runs out.
BENCH_ORDER = (
    "test_bench_aminmax.py",
    "test_bench_aminmax_per_channel.py",
    "test_bench_observers.py",
    "test_bench_host_path.py",
    "test_bench_calibrate.py",
    "test_bench_histogram_update.py",
    "test_bench_histogram_search.py",
    "test_bench_histc.py",
    "test_bench_histogram_rebin.py",
    "test_bench_quantization_error.py",
)
DEFAULT_WHEELS = ROOT / ".wheels"
# What the wheel folder provides (pip resolves their dependencies from the folder alone).
WHEEL_REQUIREMENTS = ("pytest", "pytest-benchmark", "setuptools")
# Seconds, whole script: under the 6 minutes a device call allows, with room to write the JSON.
BUDGET_S = 330.0
PRECOMPILE_TIMEOUT_S = 150.0
TESTS_TIMEOUT_S = 170.0
# Tests of tests/test_cuda.py that need CUDA itself (graphs, the profiler's CUDA kernels, a second
# GPU, ~4 GiB, CUDA events): the dry run deselects them.
CUDA_ONLY_TESTS = (
    "graph",
    "steady_forward_launches",
    "inputs_device",
    "over_2_31_elements",
    "timing_harness",
)
# Printed by a child with the children's environment: where each module comes from.
PROBE = """
import importlib.util, json, pathlib, sys
found = {}
for name in ("torch", "triton", "numpy", "pytest", "pytest_benchmark", "setuptools"):
    spec = importlib.util.find_spec(name)
    found[name] = spec.origin if spec else None
try:
    import tritonobs.kernels, tritonobs.ops
    kernels = pathlib.Path(tritonobs.kernels.__file__).resolve().parent
    found["tritonobs"] = str(kernels) if kernels == pathlib.Path(sys.argv[1]).resolve() else None
except ImportError:
    found["tritonobs"] = None
print(json.dumps(found))
"""


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict[str, Any]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return {
        "command": " ".join(command),
        "returncode": result.returncode,
        "output_tail": (result.stdout + result.stderr)[-2000:],
    }


def probe(env: dict[str, str]) -> dict[str, str | None]:
    """Where torch, triton, numpy, pytest, pytest-benchmark, setuptools and tritonobs import from
    in the children (``None``: missing; tritonobs must be this checkout's)."""
    command = [sys.executable, "-c", PROBE, str(ROOT / "kernels")]
    return json.loads(subprocess.run(command, cwd="/", env=env, capture_output=True).stdout)


def install(wheels: Path | None, site: Path, env: dict[str, str]) -> dict[str, Any]:
    """Installs, with no network, the wheel folder into ``site`` (already on the children's
    ``PYTHONPATH``) and, if needed, this checkout (editable, no dependencies).

    Returns:
        What the children import and from where, and each install command's outcome.
    """
    actions = []
    if wheels is not None:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-compile"]
        command += ["--find-links", str(wheels), "--target", str(site), *WHEEL_REQUIREMENTS]
        actions.append(_run(command, env))
    found = probe(env)
    if found["tritonobs"] is None:
        # The install maps kernels/ to tritonobs.kernels; setuptools may come from the wheels.
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-build-isolation", "-e", str(ROOT)]
        actions.append(_run(command, env))
        found = probe(env)
    return {"wheels": None if wheels is None else str(wheels), "found": found, "actions": actions}


def driver_version() -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi``, if there is one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    result = subprocess.run(query, capture_output=True, text=True)
    return result.stdout.splitlines()[0].strip() if result.returncode == 0 else None


def environment(dry_run: bool) -> dict[str, Any]:
    """torch, Triton, Python, the driver and the GPU (``None`` in the dry run)."""
    import torch
    import triton

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "driver": driver_version(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "dry_run": dry_run,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "gpu": torch.cuda.get_device_name(0),
            "capability": list(torch.cuda.get_device_capability(0)),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count,
        }
    return env


def child_env(dry_run: bool, site: Path, cache: Path) -> dict[str, str]:
    """Environment of the children: the installed wheels first on the path, one Triton cache,
    pytest plugins loaded only when named; real compiler on the GPU, interpreter in the dry run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
    )
    env |= {
        "TRITON_DEFAULT_FP_FUSION": "1",
        "TRITON_CACHE_DIR": str(cache),
        # The machine's own pytest plugins may not fit the carried pytest.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if dry_run:
        env |= {"TRITON_INTERPRET": "1", "TRITONOBS_BACKEND": "triton"}
        env["TRITONOBS_GPU_CHECK_DRY_RUN"] = "1"
    else:
        # Set, not unset: the root conftest turns the interpreter on when the variable is absent.
        env["TRITON_INTERPRET"] = "0"
        env.pop("TRITONOBS_BACKEND", None)
        env.pop("TRITONOBS_GPU_CHECK_DRY_RUN", None)
    return env


def cache_entries(cache: Path) -> int:
    """Entries of Triton's cache (one per compiled kernel, plus launchers and utilities)."""
    return len(list(cache.iterdir())) if cache.is_dir() else 0


def run_precompile(dry_run: bool, env: dict[str, str], jobs: int) -> dict[str, Any]:
    """``benchmarks/gpu_precompile.py`` in a child with the real compiler; its summary."""
    command = [sys.executable, str(BENCH_DIR / "gpu_precompile.py"), f"--jobs={jobs}"]
    command += ["--dry-run"] if dry_run else []
    log(" ".join(command[1:]))
    start = time.monotonic()
    try:
        result = subprocess.run(
            command,
            cwd=ROOT,
            env={**env, "TRITON_INTERPRET": "0"},
            capture_output=True,
            text=True,
            timeout=PRECOMPILE_TIMEOUT_S,
        )
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired:
        returncode, stdout, stderr = "timeout", "", ""
    seconds = round(time.monotonic() - start, 1)
    log(f"-> {returncode} in {seconds:.0f} s")
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if returncode in (0, 1) and lines else {}
    return {**summary, "returncode": returncode, "seconds": seconds, "stderr": stderr[-3000:]}


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """Each test case of a junit XML report: name, outcome, seconds, message."""
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "") + "\n" + (node.text or "")
                break
        cases.append(
            {
                "name": case.get("name"),
                "outcome": outcome,
                "seconds": float(case.get("time") or 0.0),
                "message": message.strip()[-3000:],
            }
        )
    return cases


def run_pytest(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """A pytest subprocess from the repository root; its exit status and output tail."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    log(" ".join(command[1:]))
    start = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        returncode, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = "timeout"
        partial = expired.stdout or b""
        output = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    seconds = time.monotonic() - start
    log(f"-> {returncode} in {seconds:.0f} s")
    return {"returncode": returncode, "seconds": round(seconds, 1), "output_tail": output[-6000:]}


def run_tests(dry_run: bool, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    junit = tmp / "tests.xml"
    args = ["tests/test_cuda.py", "-q", f"--junitxml={junit}"]
    if dry_run:
        args += ["-k", " and ".join(f"not {name}" for name in CUDA_ONLY_TESTS)]
    run = run_pytest(args, env, TESTS_TIMEOUT_S)
    cases = parse_junit(junit) if junit.is_file() else []
    summary = {outcome: 0 for outcome in ("passed", "failed", "error", "skipped")}
    for case in cases:
        summary[case["outcome"]] += 1
    no_sync = [c for c in cases if c["name"].startswith("test_forward_has_no_host_sync")]
    return {
        **run,
        "summary": summary,
        "cases": cases,
        "host_sync_free_forwards": (
            "not checked (dry run)"
            if dry_run
            else (
                "holds"
                if no_sync and all(c["outcome"] == "passed" for c in no_sync)
                else "fails or not run"
            )
        ),
    }


def run_benchmarks(
    dry_run: bool, tmp: Path, deadline: float, env: dict[str, str]
) -> dict[str, Any]:
    result_json = tmp / "bench.json"
    files = [str(BENCH_DIR / name) for name in BENCH_ORDER]
    files += sorted(str(p) for p in BENCH_DIR.glob("test_bench_*.py") if p.name not in BENCH_ORDER)
    # The benchmarks' conftest stops starting new benchmarks past this time.
    env = {**env, "TRITONOBS_BENCH_DEADLINE": str(deadline - 20.0)}
    profile = "gpu_check_dry" if dry_run else "gpu_check"
    args = [*files, "-q", "-p", "pytest_benchmark.plugin", f"--bench-profile={profile}"]
    args += [f"--benchmark-json={result_json}"]
    run = run_pytest(args, env, max(30.0, deadline - time.time()))
    if not result_json.is_file():
        return {**run, "records": []}
    data = json.loads(result_json.read_text())
    records = []
    for bench in data["benchmarks"]:
        records.append(
            {**bench["extra_info"], "name": bench["name"], "fullname": bench["fullname"]}
        )
    report = _load_report()
    meta = {"datetime": data.get("datetime", "")}
    return {
        **run,
        "records": records,
        "table_markdown": report.markdown_report(records, meta) if records else "",
        "targets": report.evaluate_targets(records),
    }


def _load_report():
    sys.path.insert(0, str(BENCH_DIR))
    import report

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", help="JSON path (default: $OUT/gpu_check.json)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    parser.add_argument(
        "--wheels",
        type=Path,
        default=DEFAULT_WHEELS if DEFAULT_WHEELS.is_dir() else None,
        help="wheel folder installed first (default: .wheels/ when it exists)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    args = parser.parse_args(argv)
    start = time.time()
    deadline = start + BUDGET_S
    if os.environ.get("OUT"):
        output = Path(os.environ["OUT"]) / "gpu_check.json"
    elif args.output:
        output = Path(args.output)
    else:
        parser.error("give an output path or set $OUT")

    result: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(args.dry_run),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # The dry run compiles into a cache of its own, so that it really compiles.
        default_cache = Path.home() / ".triton" / "cache"
        cache = (
            tmp / "triton-cache"
            if args.dry_run
            else Path(os.environ.get("TRITON_CACHE_DIR", default_cache))
        )
        env = child_env(args.dry_run, tmp / "site", cache)
        result["install"] = install(args.wheels, tmp / "site", env)
        found = result["install"]["found"]
        ok = False
        if not args.dry_run and not result["environment"]["cuda_available"]:
            result["error"] = "no CUDA device: run with --dry-run on a machine without a GPU"
        elif found["pytest"] is None or found["tritonobs"] is None:
            result["error"] = "pytest or this checkout's tritonobs is not importable (see install)"
        else:
            result["precompile"] = run_precompile(args.dry_run, env, args.jobs)
            before = cache_entries(cache)
            result["tests"] = run_tests(args.dry_run, tmp, env)
            # Variants the precompile missed, compiled by the tests themselves.
            result["tests"]["cache_entries_added"] = cache_entries(cache) - before
            if found["pytest_benchmark"] is None:
                result["benchmarks"] = {"skipped": "pytest-benchmark is not importable"}
            else:
                result["benchmarks"] = run_benchmarks(args.dry_run, tmp, deadline, env)
            tests = result["tests"]
            ok = tests["returncode"] == 0 and tests["summary"]["passed"] > 0
            ok = ok and result["benchmarks"].get("returncode") == 0
    result["ok"] = ok
    result["seconds"] = round(time.time() - start, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {output} (ok={ok}, {result['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
