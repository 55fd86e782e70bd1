"""``tritonobs bench``: run the benchmark suite for this device and print the results table.

The suite lives in the source checkout's ``benchmarks/`` (it is not installed with the package);
it runs in a separate pytest process with Triton's interpreter off unless ``TRITON_INTERPRET`` is
already set.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from tritonobs.bench import PROFILES, default_profile_name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bench`` on the ``tritonobs`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks for this device and print the table",
        description=__doc__,
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="sizes and providers to run (default: cuda with a GPU, else cpu)",
    )
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    parser.add_argument("--json", default=None, help="keep the pytest-benchmark JSON here")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--png", default=None, help="also write the plot here")
    parser.add_argument(
        "--benchmarks-dir",
        default=None,
        help="the benchmarks/ folder (default: the one next to this package's source)",
    )
    parser.set_defaults(func=run)


def benchmarks_dir(given: str | None) -> Path:
    """The ``benchmarks/`` folder to run: ``given``, else the one beside the package source."""
    path = Path(given) if given else Path(__file__).resolve().parents[1] / "benchmarks"
    if not (path / "report.py").is_file():
        raise SystemExit(
            f"tritonobs bench: no benchmark suite at {path}; run it from a source checkout "
            "or pass --benchmarks-dir"
        )
    return path


def load_report(bench_dir: Path) -> ModuleType:
    """Import ``benchmarks/report.py`` from its path."""
    spec = importlib.util.spec_from_file_location(
        "tritonobs_benchmarks_report", bench_dir / "report.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    """Run the suite, print the markdown report; returns pytest's exit status."""
    bench_dir = benchmarks_dir(args.benchmarks_dir)
    profile = args.profile or default_profile_name()
    with tempfile.TemporaryDirectory() as tmp:
        json_path = args.json or str(Path(tmp) / "result.json")
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(bench_dir),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--bench-profile={profile}",
            f"--benchmark-json={json_path}",
            # The table below replaces pytest-benchmark's host-timer table.
            "--benchmark-columns=median",
            "--benchmark-quiet",
        ]
        if args.select:
            command += ["-k", args.select]
        env = dict(os.environ)
        env.setdefault("TRITON_INTERPRET", "0")
        status = subprocess.call(command, cwd=bench_dir.parent, env=env)
        if not Path(json_path).is_file():
            return status or 1
        report = load_report(bench_dir)
        records, meta = report.load_records(json_path)
        text = report.markdown_report(records, meta)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text)
        if args.png:
            report.plot(records, args.png)
    return status
