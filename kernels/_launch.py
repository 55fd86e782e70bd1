"""Host side shared by the launchers: the input's device, per-device workspaces, integer helpers.

A CUDA forward must cost a few microseconds of Python, so launchers follow three rules:

* plain integer arithmetic: :func:`cdiv` and :func:`next_power_of_2` here, never ``triton.cdiv``
  or ``triton.next_power_of_2`` (constexpr wrappers in Triton 3.9, ~12 us a host call);
* launch plans cached per (shape, strides, dtype, device, ...) by each launcher;
* no per-call allocation or zero-fill of scratch memory: :func:`workspace` hands out one
  zero-initialised buffer per (device, name), and every kernel that uses one leaves it as it found
  it (the last program of a ticket resets the ticket), which also makes the launches safe to
  capture in a CUDA graph and replay.

Triton launches on the *current* CUDA device and stream; :func:`device_guard` makes that the
input's device for the launch (a model split over two GPUs, ``--device cuda:1``).

One source for launches and compile checks: each launcher builds its :class:`LaunchConfig` (kernel,
constexprs, compile options) with one function, and its module's ``COMPILE_SPECS`` are made from
the same function (:meth:`LaunchConfig.spec`), so ``tests/compile_sm90.py`` compiles what is
launched. Every config takes its options from :func:`options`, which pins ``enable_fp_fusion``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from typing import Any

import torch

_NO_GUARD = contextlib.nullcontext()
_WORKSPACES: dict[tuple[torch.device, str], torch.Tensor] = {}

# SMs of the GPU that COMPILE_SPECS are made for (H100/H200 SXM): launch constants that depend on
# the device (programs, partials) take this value there.
SPEC_SMS = 132

# Full copies of an input that a launcher makes before launching, by launcher (see
# ``docs/kernels.md``: only layouts no model produces need one). Tests read it.
COPIES: collections.Counter[str] = collections.Counter()


def options(num_warps: int, num_stages: int | None = None) -> dict[str, object]:
    """The compile options of a launch: ``num_warps`` (and ``num_stages``), FMA contraction off.

    ``enable_fp_fusion=False`` everywhere: every kernel rounds each operation as the torch
    reference it is compared with, and Triton's default for it changes in 3.10.
    """
    pinned: dict[str, object] = {"num_warps": num_warps, "enable_fp_fusion": False}
    if num_stages is not None:
        pinned["num_stages"] = num_stages
    return pinned


@dataclasses.dataclass(frozen=True, eq=False)
class LaunchConfig:
    """What a launch passes besides the grid and the runtime arguments.

    Attributes:
        kernel: the ``@triton.jit`` kernel.
        constexprs: the constexpr arguments by name.
        options: compile options (:func:`options`).
    """

    kernel: Any
    constexprs: dict[str, object]
    options: dict[str, object]

    @functools.cached_property
    def kwargs(self) -> dict[str, object]:
        """The keyword arguments of the launch: constexprs and options."""
        return {**self.constexprs, **self.options}

    def spec(
        self, signature: dict[str, str], specialised: dict[str, int] | None = None
    ) -> tuple[Any, dict[str, str], dict, dict]:
        """A ``COMPILE_SPECS`` entry of this launch.

        Args:
            signature: the types of the runtime arguments (see ``tests/compile_sm90.py``).
            specialised: runtime integer arguments that the launch passes as 1, which Triton
                compiles as constants.
        """
        constexprs = {**self.constexprs, **(specialised or {})}
        full = {**signature, **dict.fromkeys(constexprs, "constexpr")}
        return self.kernel, full, constexprs, dict(self.options)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def device_guard(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a launch on ``device`` runs under: ``torch.cuda.device(device)`` on CUDA.

    CPU tensors (Triton's interpreter) need no guard.
    """
    if device.type == "cuda":
        return torch.cuda.device(device)
    return _NO_GUARD


def workspace(device: torch.device, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A zero-initialised scratch buffer of at least ``numel`` elements, kept per (device, name).

    The same tensor comes back on every call (it is reallocated, zeroed, only when a call needs
    more elements or another dtype). Kernels that use it must leave it zeroed when they finish.
    Launches that share a name must not run concurrently on two streams of one device.

    Args:
        device: where the buffer lives.
        name: what it is for (one name per kernel family).
        numel: elements needed by this launch.
        dtype: element type.

    Returns:
        A 1-D tensor of ``numel`` or more elements.
    """
    key = (device, name)
    buffer = _WORKSPACES.get(key)
    if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
        buffer = torch.zeros(numel, dtype=dtype, device=device)
        _WORKSPACES[key] = buffer
    return buffer


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (looked up once per device)."""
    return torch.cuda.get_device_properties(device).multi_processor_count
