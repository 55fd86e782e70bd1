"""The host work of the Triton (CUDA) code path, measured on any machine.

On a GPU the Python around a kernel launch can cost more than the kernel: a [4096, 4096] bf16
activation is ~10 us of H200 memory traffic. This module runs an observer's Triton path on CPU
tensors with every Triton launch replaced by a recorder (:func:`stub_triton_launches`), so what is
left is the host work of a CUDA forward: plan lookup, device guard, argument marshalling, op
dispatch, and any torch kernel the path launches besides the Triton ones.

* :func:`count_launches` counts, for one call, the Triton launches and the torch kernels (leaf
  ``aten`` ops that would run a kernel on a device, from the profiler) and the host syncs.
* :func:`host_microseconds` times many calls with launches stubbed.

Used by ``tests/test_host_path.py`` (launch counts asserted), ``benchmarks/test_bench_host_path.py``
and ``tritonobs bench``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

# aten ops that launch no device kernel: allocation, views and metadata.
_NO_KERNEL_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "empty",
        "empty_like",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "as_strided",
        "alias",
        "detach",
        "lift_fresh",
        "expand",
        "permute",
        "t",
        "transpose",
        "squeeze",
        "unsqueeze",
        "select",
        "slice",
        "unbind",
        "split",
        "chunk",
        "narrow",
        "resolve_conj",
        "resolve_neg",
        "result_type",
        "to",
        "_has_compatible_shallow_copy_type",
    )
)
# aten ops that wait for the device.
_SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero"})


class Launch(NamedTuple):
    """One stubbed Triton launch: the kernel's name, its grid and its keyword arguments."""

    kernel: str
    grid: Any
    kwargs: dict[str, Any]


@contextlib.contextmanager
def stub_triton_launches() -> Iterator[list[Launch]]:
    """Within the block, ``kernel[grid](...)`` records a :class:`Launch` and runs nothing.

    Covers compiled (``JITFunction``) and interpreted kernels alike (both are Triton
    ``KernelInterface``). Yields the list the launches are appended to.
    """
    from triton.runtime.jit import KernelInterface

    launches: list[Launch] = []
    original = KernelInterface.__getitem__

    def recorder(self: Any, grid: Any) -> Callable[..., None]:
        # As cheap as can be: this stands for the launch, which the host time leaves out.
        return lambda *args, **kwargs: launches.append(Launch(self.__name__, grid, kwargs))

    KernelInterface.__getitem__ = recorder  # type: ignore[method-assign]
    try:
        yield launches
    finally:
        KernelInterface.__getitem__ = original  # type: ignore[method-assign]


@dataclasses.dataclass(frozen=True)
class LaunchCount:
    """What one call launched.

    Attributes:
        triton: Triton kernel launches, by kernel name, in order.
        torch: torch kernels (leaf aten ops that run a kernel on a device), by op name, in order.
        syncs: host synchronisations (``.item()``, ``bool(tensor)``, ...).
    """

    triton: tuple[str, ...]
    torch: tuple[str, ...]
    syncs: int

    @property
    def total(self) -> int:
        """Triton launches plus torch kernels."""
        return len(self.triton) + len(self.torch)


def count_launches(fn: Callable[[], Any]) -> LaunchCount:
    """Run ``fn()`` once with Triton launches stubbed and count what it launches.

    Torch kernels are read from the profiler: every ``aten`` op without ``aten`` children that is
    not an allocation, a view or a sync (those are counted in ``syncs``).
    """
    from torch.profiler import ProfilerActivity, profile

    with stub_triton_launches() as launches, profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    kernels: list[str] = []
    syncs = 0
    for event in prof.events():
        name = event.name
        if name in _SYNC_OPS:
            syncs += 1
            continue
        if not name.startswith("aten::") or name in _NO_KERNEL_OPS:
            continue
        if any(child.name.startswith("aten::") for child in event.cpu_children):
            continue
        parent = event.cpu_parent
        if parent is not None and parent.name in _SYNC_OPS:
            continue
        kernels.append(name)
    return LaunchCount(tuple(launch.kernel for launch in launches), tuple(kernels), syncs)


def host_microseconds(fn: Callable[[], Any], calls: int = 2000, stub: bool = True) -> float:
    """Best-of-five average wall time of ``fn()`` in microseconds, over ``calls`` calls each.

    Args:
        fn: the call to time (e.g. an observer's forward on a fixed input).
        calls: calls per timed repeat.
        stub: replace Triton launches by a recorder (the host work of the Triton path).

    Returns:
        Microseconds per call, the fastest of five repeats (a shared machine adds, never removes).
    """
    context = stub_triton_launches() if stub else contextlib.nullcontext()
    with context:
        for _ in range(max(10, calls // 10)):
            fn()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def observer_host_path(
    observer: torch.nn.Module, x: torch.Tensor, calls: int = 2000
) -> tuple[LaunchCount, float]:
    """Launch count of one steady-state forward of ``observer`` on ``x`` through the Triton path,
    and its host microseconds per forward with launches stubbed.

    The observer first sees ``x`` once through the torch backend (its state initialised, no
    Triton needed) and once through the stubbed Triton path (launch plan and workspaces made), so
    the counted forward is a steady-state one.
    """
    from tritonobs.backend import use_backend

    with use_backend("torch"):
        observer(x)
    with use_backend("triton"):
        with stub_triton_launches():
            observer(x)
        count = count_launches(lambda: observer(x))
        micros = host_microseconds(lambda: observer(x), calls)
    return count, micros
