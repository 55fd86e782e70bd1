"""Registers the per-device kernels of a ``tritonobs::<op>`` custom op.

Every op has a torch reference (``<op>_torch``) and a Triton launcher (``<op>_triton`` in
``tritonobs.kernels.<op>``). The same wrapper is registered for CPU and CUDA: it runs the launcher
when :func:`tritonobs.backend.uses_triton` says so and the reference otherwise. The kernel module is
imported on first use, so ``import tritonobs`` never imports Triton.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from tritonobs.backend import uses_triton


def register_kernels(
    op: torch.library.CustomOpDef,
    reference: Callable[..., Any],
    launcher: str,
) -> None:
    """Register ``op``'s CPU and CUDA kernels.

    Args:
        op: the custom op, made with ``torch.library.custom_op``.
        reference: the pure-torch implementation, same signature as ``op``.
        launcher: ``"<module>:<function>"`` under ``tritonobs.kernels``, e.g. ``"aminmax:aminmax_triton"``.
    """
    module_name, function_name = launcher.split(":")

    def kernel(*args: Any) -> Any:
        first = next(a for a in args if isinstance(a, torch.Tensor))
        if uses_triton(first.device):
            module = importlib.import_module(f"tritonobs.kernels.{module_name}")
            return getattr(module, function_name)(*args)
        return reference(*args)

    for device_type in ("cpu", "cuda"):
        op.register_kernel(device_type)(kernel)
