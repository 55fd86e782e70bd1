"""Defines a ``tritonobs::<op>`` and registers its per-device kernels.

Every op has a typed public function (its schema), a torch reference (``<op>_torch``) and a Triton
launcher (``<op>_triton`` in ``tritonobs.kernels.<op>``). A CPU and a CUDA kernel are
registered: each runs the launcher when :func:`tritonobs.backend.uses_triton` says so for its
device and the reference otherwise. The kernel module is imported on first use, so
``import tritonobs`` never imports Triton.

Ops are defined with ``torch.library.define``/``impl`` rather than ``torch.library.custom_op``: the
latter wraps every call in Python autograd, aliasing and dynamo-disable layers that cost ~15-50 us a
call, more than a per-tensor min/max of a million floats on a CPU. The ops take no part in autograd
(observers detach their input).

An observer's state update is one op that mutates the observer's buffers in place (``mutates_args``
names them; the schema marks them ``Tensor(a!)``) and returns nothing: on CUDA its kernel writes
the buffers itself, so a forward is one launch and the buffers keep their identity.
``torch.compile`` functionalizes such ops and inductor re-inplaces them. Pure functions (searches,
references, ``histc``) stay functional.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import torch

from tritonobs.backend import uses_triton_on

NAMESPACE = "tritonobs"


def define_op(
    signature: Callable[..., Any],
    reference: Callable[..., Any],
    launcher: str,
    fake: Callable[..., Any],
    mutates_args: tuple[str, ...] = (),
) -> None:
    """Define ``tritonobs::<signature.__name__>`` and register its CPU, CUDA and fake kernels.

    Args:
        signature: the op's typed public function; its annotations give the schema, and its first
            argument is a tensor on the device the op runs on.
        reference: the pure-torch implementation, same arguments.
        launcher: ``"<module>:<function>"`` under ``tritonobs.kernels``, e.g. ``"aminmax:aminmax_triton"``.
        fake: the shape/dtype-only implementation used under ``torch.compile`` (returns ``None``
            for a mutating op).
        mutates_args: the arguments the op writes in place (all of them tensors).
    """
    qualname = f"{NAMESPACE}::{signature.__name__}"
    torch.library.define(qualname, torch.library.infer_schema(signature, mutates_args=mutates_args))
    module_name, function_name = launcher.split(":")
    module_name = f"tritonobs.kernels.{module_name}"

    def kernel_for(cuda: bool) -> Callable[..., Any]:
        def kernel(*args: Any) -> Any:
            if uses_triton_on(cuda):
                # sys.modules first: import_module costs a microsecond even for a loaded module.
                module = sys.modules.get(module_name) or importlib.import_module(module_name)
                return getattr(module, function_name)(*args)
            return reference(*args)

        return kernel

    torch.library.impl(qualname, "cpu")(kernel_for(cuda=False))
    torch.library.impl(qualname, "cuda")(kernel_for(cuda=True))
    torch.library.register_fake(qualname)(fake)
