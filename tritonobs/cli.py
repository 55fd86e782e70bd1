"""The ``tritonobs`` command: ``tritonobs calibrate`` and ``tritonobs bench``."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
from collections.abc import Sequence

# Each subcommand lives in its own module with ``add_parser(subparsers)`` (which sets ``func``).
_SUBCOMMANDS = ("tritonobs._cli_calibrate", "tritonobs._cli_bench")


def version_text() -> str:
    """``tritonobs X (torch Y, triton Z)``; triton's version read without importing it."""
    import torch

    from tritonobs import __version__

    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "not installed"
    return f"tritonobs {__version__} (torch {torch.__version__}, triton {triton})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tritonobs`` console script."""
    parser = argparse.ArgumentParser(
        prog="tritonobs", description="Calibrate with tritonobs observers, or benchmark them."
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
