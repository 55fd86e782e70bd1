"""The one-call GPU check behind ``benchmarks/gpu_check.sh`` (see that script for usage).

1. checks what the machine has (CUDA, torch, triton, pytest, pytest-benchmark; installs this
   checkout with ``pip install --no-deps -e .`` if it is not importable, and pytest-benchmark from
   a local wheel folder if one is given);
2. runs ``tests/test_cuda.py`` with the real Triton compiler (``TRITON_INTERPRET=0``): compiled
   kernels vs the torch references, every observer's forward under
   ``torch.cuda.set_sync_debug_mode("error")``, CUDA-graph capture and replay vs eager;
3. runs the ``gpu_check`` benchmark profile (the issue-4 subset: [8192, 8192] fp32/bf16,
   tritonobs vs torch.ao), stopping early if the time budget runs out;
4. writes ONE JSON file: environment (GPU name), every test's outcome, every benchmark record,
   the results table and the performance targets' verdicts.

``--dry-run`` runs the same steps on CPU: Triton's interpreter, tiny shapes, no sync-debug mode,
no CUDA graphs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
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
# Seconds, whole script: under the 6 minutes a device call allows, with room to write the JSON.
BUDGET_S = 330.0
TESTS_TIMEOUT_S = 170.0


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def ensure_requirements(wheels: str | None) -> dict[str, Any]:
    """What the machine has; installs tritonobs (editable, no deps) and pytest-benchmark (from a
    local wheel folder) when missing and possible. Installs nothing from the network."""
    found: dict[str, Any] = {
        name: has_module(name)
        for name in ("torch", "triton", "numpy", "pytest", "pytest_benchmark")
    }
    actions = []
    if not found["pytest_benchmark"] and wheels:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index"]
        command += ["--find-links", wheels, "pytest-benchmark"]
        result = subprocess.run(command, capture_output=True, text=True)
        actions.append({"command": " ".join(command), "returncode": result.returncode})
        found["pytest_benchmark"] = result.returncode == 0
    # tritonobs must import from this checkout, kernels included (the install maps kernels/ to
    # tritonobs.kernels).
    check = [
        sys.executable,
        "-c",
        "import pathlib, sys, tritonobs.kernels, tritonobs.ops; "
        "sys.exit(pathlib.Path(tritonobs.kernels.__file__).resolve().parent != "
        f"pathlib.Path({str(ROOT / 'kernels')!r}).resolve())",
    ]
    found["tritonobs"] = subprocess.run(check, cwd="/", capture_output=True).returncode == 0
    if not found["tritonobs"]:
        # Offline: no dependency is fetched.
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        command += ["--no-build-isolation", "-e", str(ROOT)]
        result = subprocess.run(command, capture_output=True, text=True)
        actions.append(
            {
                "command": " ".join(command),
                "returncode": result.returncode,
                "stderr": result.stderr[-2000:],
            }
        )
        found["tritonobs"] = subprocess.run(check, cwd="/", capture_output=True).returncode == 0
    found["matplotlib"] = has_module("matplotlib")
    found["actions"] = actions
    return found


def environment(dry_run: bool) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "python": sys.version.split()[0],
        "dry_run": dry_run,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "gpu": torch.cuda.get_device_name(0),
            "capability": list(torch.cuda.get_device_capability(0)),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count,
        }
    else:
        env["gpu"] = None
    if has_module("triton"):
        import triton

        env["triton"] = triton.__version__
    return env


def child_env(dry_run: bool) -> dict[str, str]:
    """Environment of the pytest runs: real compiler on the GPU, interpreter in the dry run."""
    env = dict(os.environ)
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    if dry_run:
        env |= {"TRITON_INTERPRET": "1", "TRITONOBS_BACKEND": "triton"}
        env["TRITONOBS_GPU_CHECK_DRY_RUN"] = "1"
    else:
        # Set, not unset: the root conftest turns the interpreter on when the variable is absent.
        env["TRITON_INTERPRET"] = "0"
        env.pop("TRITONOBS_BACKEND", None)
        env.pop("TRITONOBS_GPU_CHECK_DRY_RUN", None)
    return env


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


def run_tests(dry_run: bool, tmp: Path) -> dict[str, Any]:
    junit = tmp / "tests.xml"
    args = ["tests/test_cuda.py", "-q", f"--junitxml={junit}"]
    if dry_run:
        # CUDA graphs, the profiler's CUDA kernel count and a second GPU need CUDA.
        args += ["-k", "not graph and not steady_forward_launches and not inputs_device"]
    run = run_pytest(args, child_env(dry_run), TESTS_TIMEOUT_S)
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


def run_benchmarks(dry_run: bool, tmp: Path, deadline: float) -> dict[str, Any]:
    if not has_module("pytest_benchmark"):
        return {"skipped": "pytest-benchmark is not installed (pass --wheels DIR with its wheel)"}
    result_json = tmp / "bench.json"
    files = [str(BENCH_DIR / name) for name in BENCH_ORDER]
    files += sorted(str(p) for p in BENCH_DIR.glob("test_bench_*.py") if p.name not in BENCH_ORDER)
    env = child_env(dry_run)
    # The benchmarks' conftest stops starting new benchmarks past this time.
    env["TRITONOBS_BENCH_DEADLINE"] = str(deadline - 20.0)
    profile = "gpu_check_dry" if dry_run else "gpu_check"
    args = [*files, "-q", f"--bench-profile={profile}", f"--benchmark-json={result_json}"]
    run = run_pytest(args, env, max(30.0, deadline - time.time()))
    if not result_json.is_file():
        return {**run, "records": []}
    data = json.loads(result_json.read_text())
    records = []
    for bench in data["benchmarks"]:
        stats = bench.get("stats") or {}
        records.append(
            {
                **bench["extra_info"],
                "name": bench["name"],
                "fullname": bench["fullname"],
                "host_median_ms": 1e3 * stats["median"] if "median" in stats else None,
            }
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
    parser.add_argument("--wheels", help="folder of wheels for what is missing (pytest-benchmark)")
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
        "requirements": ensure_requirements(args.wheels),
    }
    result["environment"] = environment(args.dry_run)
    ok = True
    if not args.dry_run and not result["environment"]["cuda_available"]:
        result["error"] = "no CUDA device: run with --dry-run on a machine without a GPU"
        ok = False
    elif not result["requirements"]["pytest"] or not result["requirements"]["tritonobs"]:
        result["error"] = "pytest or an importable tritonobs is missing (see requirements)"
        ok = False
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result["tests"] = run_tests(args.dry_run, Path(tmp))
            result["benchmarks"] = run_benchmarks(args.dry_run, Path(tmp), deadline)
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
