"""Every kernel of ``tritonobs.kernels`` compiles for sm_90 (see ``tests/compile_sm90.py``).

The interpreter is on in this process, and compiled and interpreted kernels do not mix in one
process, so the compile runs in a separate one with ``TRITON_INTERPRET`` off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compile_sm90.py")

pytest.importorskip("triton")


def test_every_kernel_compiles_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, result.stdout + result.stderr
