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

The public function is the op's eager entry point. Going through the dispatcher to a Python kernel
costs 2-6 us a call in a tight loop and ~20 us inside a model's forward (measured on the embedded
calibration workload, where the model's layers evict the dispatcher's code and data from the CPU
caches between two observer calls): as much as the per-tensor min/max of a [8, 128, 384]
activation. So when nothing but a plain call could be watching, the public function calls the
kernel the dispatcher would have chosen for the input's device (the same registered kernel
object) directly. Everything else goes through ``torch.ops.tritonobs.<op>``: ``torch.compile``
and ``torch.export`` (so the graph holds the op), tensor subclasses (fake, functional, DTensor),
dispatch and function modes, the JIT tracer, the profiler (so traces name the op), inputs that
require grad, and devices other than CPU and CUDA.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch
from torch._C import _get_tracing_state, _is_torch_function_mode_enabled, _len_torch_dispatch_stack
from torch._C._autograd import _profiler_enabled

from tritonobs.backend import uses_triton_on

NAMESPACE = "tritonobs"

P = ParamSpec("P")
R = TypeVar("R")


def define_op(
    reference: Callable[..., Any],
    launcher: str,
    fake: Callable[..., Any],
    mutates_args: tuple[str, ...] = (),
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: define ``tritonobs::<name>`` from a typed function and register its kernels.

    The decorated function gives the op its name, schema (from its annotations) and docstring;
    its body is not run. What the decorator returns is the op's public entry point (see the module
    docstring for when it skips the dispatcher).

    Args:
        reference: the pure-torch implementation, same arguments.
        launcher: ``"<module>:<function>"`` under ``tritonobs.kernels``, e.g. ``"aminmax:aminmax_triton"``.
        fake: the shape/dtype-only implementation used under ``torch.compile`` (returns ``None``
            for a mutating op).
        mutates_args: the arguments the op writes in place (all of them tensors).

    Returns:
        A decorator taking the typed function (whose first argument is a tensor on the device the
        op runs on) and returning the op's entry point with the same signature.
    """

    def decorate(signature: Callable[P, R]) -> Callable[P, R]:
        qualname = f"{NAMESPACE}::{signature.__name__}"
        schema = torch.library.infer_schema(signature, mutates_args=mutates_args)
        torch.library.define(qualname, schema)
        load = _loader(launcher)
        torch.library.impl(qualname, "cpu")(_kernel(reference, load, cuda=False))
        torch.library.impl(qualname, "cuda")(_kernel(reference, load, cuda=True))
        torch.library.register_fake(qualname)(fake)
        overload = getattr(getattr(torch.ops, NAMESPACE), signature.__name__).default

        @functools.wraps(signature)
        def call(*args: Any, **kwargs: Any) -> Any:
            # is_compiling first: under dynamo it is a constant and the rest is never traced.
            if not torch.compiler.is_compiling() and args:
                x = args[0]
                if (
                    type(x) is torch.Tensor
                    and not x.requires_grad
                    and not _len_torch_dispatch_stack()
                    and not _is_torch_function_mode_enabled()
                    and not _profiler_enabled()
                    and _get_tracing_state() is None
                    and (x.is_cuda or x.is_cpu)
                ):
                    # The registered kernel's choice, inline: each Python frame on this path
                    # costs microseconds when a model's layers run between two calls.
                    if uses_triton_on(x.is_cuda):
                        return load()(*args, **kwargs)
                    return reference(*args, **kwargs)
            return overload(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate


def _loader(launcher: str) -> Callable[[], Callable[..., Any]]:
    """A function returning the launcher ``"<module>:<function>"`` of ``tritonobs.kernels``,
    imported on first use (so that ``import tritonobs`` never imports Triton)."""
    module_name, function_name = launcher.split(":")
    module_name = f"tritonobs.kernels.{module_name}"

    def load() -> Callable[..., Any]:
        # sys.modules first: import_module costs a microsecond even for a loaded module.
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        return getattr(module, function_name)

    return load


def _kernel(
    reference: Callable[..., Any], load: Callable[[], Callable[..., Any]], cuda: bool
) -> Callable[..., Any]:
    """The kernel registered for CUDA (``cuda=True``) or CPU: the launcher when
    :func:`tritonobs.backend.uses_triton_on` says so, the reference otherwise."""

    def kernel(*args: Any, **kwargs: Any) -> Any:
        if uses_triton_on(cuda):
            return load()(*args, **kwargs)
        return reference(*args, **kwargs)

    return kernel
