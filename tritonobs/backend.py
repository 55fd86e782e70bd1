"""Which implementation the ``tritonobs::*`` ops run: Triton kernels or plain torch ops.

The dispatcher picks the device (a CPU and a CUDA kernel are registered for every op); this switch
only picks, inside that device's kernel, between the Triton launcher and the torch reference:

* ``auto`` (default): Triton on CUDA tensors when Triton imports, torch ops on CPU tensors.
* ``torch``: torch ops everywhere.
* ``triton``: Triton everywhere. On CPU tensors that needs Triton's interpreter, so
  ``TRITON_INTERPRET=1`` must be in the environment before anything imports ``triton``.

Set it with the environment variable ``TRITONOBS_BACKEND`` (read once, the first time an op runs
or :func:`get_backend` is called) or, in Python, with :func:`set_backend` or the
:func:`use_backend` context manager (which win over the variable and take effect at once).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Literal

import torch

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[Backend, ...] = ("auto", "torch", "triton")

_override: Backend | None = None


def _check(name: str, where: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name  # type: ignore[return-value]


def get_backend() -> Backend:
    """The backend in force: the Python override if set, else ``TRITONOBS_BACKEND``, else ``auto``."""
    return _override or _environment_backend()


@functools.cache
def _environment_backend() -> Backend:
    """``TRITONOBS_BACKEND``, read once: every op call asks for the backend, and reading the
    environment costs about a microsecond (as much as the rest of a CUDA launch's host work)."""
    value = os.environ.get("TRITONOBS_BACKEND")
    if value is None:
        return "auto"
    return _check(value.strip().lower(), "TRITONOBS_BACKEND")


def set_backend(name: Backend | None) -> Backend | None:
    """Force a backend for this process (``None`` goes back to the environment variable).

    Returns:
        The previous override, so that it can be restored.
    """
    global _override
    previous = _override
    _override = None if name is None else _check(name, "backend")
    return previous


@contextlib.contextmanager
def use_backend(name: Backend) -> Iterator[None]:
    """Run a block with the given backend, restoring the previous choice afterwards."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package can be found (checked once, without importing it).

    Returns:
        ``False`` when no finder knows ``triton``, or when a finder refuses it with an
        ``ImportError`` (an import hook that blocks the package).
    """
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def uses_triton(device: torch.device) -> bool:
    """Whether an op whose inputs live on ``device`` runs its Triton launcher."""
    return uses_triton_on(device.type == "cuda")


def uses_triton_on(cuda: bool) -> bool:
    """:func:`uses_triton` for a CUDA (``True``) or a CPU device: what each device's registered
    kernel asks, without building a ``torch.device`` per call."""
    backend = _override or _environment_backend()
    if backend == "auto":
        return cuda and triton_available()
    if backend == "torch":
        return False
    if not triton_available():
        raise RuntimeError("TRITONOBS_BACKEND=triton but the triton package is not installed")
    return True
