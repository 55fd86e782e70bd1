"""``tritonobs --version``."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import tritonobs
from tritonobs.cli import main


def test_version_names_tritonobs_torch_and_triton(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    expected = (
        f"tritonobs {tritonobs.__version__} (torch {torch.__version__}, "
        f"triton {importlib.metadata.version('triton')})"
    )
    assert capsys.readouterr().out.strip() == expected
