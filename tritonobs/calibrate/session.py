"""The calibration run: hooks on the target modules, the batch loop, progress and checkpoints.

:func:`calibrate` attaches one observer to the input of every target module (``nn.Linear`` by
default; weights and outputs on request) through forward hooks, runs the calibration batches under
``torch.inference_mode()``, always removes its hooks, and returns a :class:`CalibrationResult`.
With ``checkpoint=`` it writes the observers' state every ``checkpoint_every`` batches and on
SIGINT/SIGTERM (:mod:`tritonobs.calibrate.checkpoint`), and ``resume=True`` continues from it.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import nn

from tritonobs._base import _TorchAOObserverBase
from tritonobs.calibrate.checkpoint import (
    Checkpoint,
    DeferredSignals,
    SavedEntry,
    SavedState,
    fingerprint,
)
from tritonobs.calibrate.errors import (
    BatchTypeError,
    CalibrationError,
    CheckpointError,
    DeviceMismatchError,
    EmptyBatchesError,
    NoTargetModulesError,
)
from tritonobs.calibrate.observers import (
    ObservedTensor,
    ObserverSpec,
    Role,
    observer_factory,
    set_buffers,
)
from tritonobs.calibrate.result import CalibrationResult, observer_buffers

Targets = type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool]


def _call_target(observer: nn.Module) -> Callable[[torch.Tensor], Any]:
    """What calibrate calls to run ``observer``: its bound ``forward``, or the module itself when
    it has hooks of its own. ``nn.Module.__call__`` costs about a microsecond a call (as much as a
    whole no-op observer) only to look for hooks, which the observers calibrate builds do not have.
    """
    if observer._forward_pre_hooks or observer._forward_hooks:
        return observer
    return observer.forward


class _Tally:
    """Calibrate's hooks for one observed tensor on CPU: feed the tensor to its observer, count and
    time the call (one ``perf_counter`` pair), and add up calibrate's own time around it
    (``overhead``: the hook from entry to exit, less the observer call).

    A hook runs once per observed tensor and batch, after model layers that evict the
    interpreter's data from the CPU caches, and costs there several times what it costs in a tight
    loop: the counts live in slots, cheaper to reach than the :class:`ObservedTensor`'s attribute
    dict, and :meth:`finish` adds them to it.
    """

    __slots__ = ("entry", "forward", "calls", "seconds", "overhead")

    def __init__(self, entry: ObservedTensor) -> None:
        self.entry = entry
        self.forward = _call_target(entry.observer)
        self.calls = 0
        self.seconds = 0.0
        self.overhead = 0.0

    def observe(self, x: torch.Tensor, entered: float) -> None:
        """Feed ``x`` to the observer; ``entered`` is ``perf_counter()`` at the hook's entry."""
        called = perf_counter()
        self.forward(x)
        returned = perf_counter()
        self.seconds += returned - called
        self.calls += 1
        self.overhead += perf_counter() - entered - (returned - called)

    def input_hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Forward pre-hook (``with_kwargs=True``): observe the module's first tensor argument."""
        entered = perf_counter()
        # A module's input is nearly always its first positional argument: no scan for it.
        x = args[0] if args and isinstance(args[0], torch.Tensor) else _first_tensor(args, kwargs)
        if x is not None:
            self.observe(x, entered)

    def output_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Forward hook: observe the output, or the first tensor of a tuple/list output."""
        entered = perf_counter()
        if isinstance(output, torch.Tensor):
            self.observe(output, entered)
        elif isinstance(output, (tuple, list)):
            x = _first_tensor(output, _NO_KWARGS)
            if x is not None:
                self.observe(x, entered)

    def finish(self) -> None:
        """Add this run's calls and observer time to the entry."""
        self.entry.calls += self.calls
        self.entry.seconds += self.seconds


class _CudaTally(_Tally):
    """:class:`_Tally` on CUDA: each observer call is timed by a pair of CUDA events, read in
    :meth:`finish`, so that timing never makes the host wait for the GPU while calibrating."""

    __slots__ = ("events",)

    def __init__(self, entry: ObservedTensor) -> None:
        super().__init__(entry)
        self.events: list[tuple[Any, Any]] = []

    def observe(self, x: torch.Tensor, entered: float) -> None:
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        called = perf_counter()
        self.forward(x)
        returned = perf_counter()
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.events.append((start, end))
        self.calls += 1
        self.overhead += perf_counter() - entered - (returned - called)

    def finish(self) -> None:
        """Add the calls and the events' times to the entry (waits for the last event)."""
        if self.events:
            self.events[-1][1].synchronize()
            self.seconds = sum(start.elapsed_time(end) for start, end in self.events) / 1e3
            self.events.clear()
        super().finish()


def select_targets(model: nn.Module, targets: Targets) -> list[tuple[str, nn.Module]]:
    if isinstance(targets, (type, tuple)):
        types = targets if isinstance(targets, tuple) else (targets,)

        def selected(name: str, module: nn.Module) -> bool:
            return isinstance(module, types)
    else:
        selected = targets
    return [
        (name, module)
        for name, module in model.named_modules()
        if not isinstance(module, _TorchAOObserverBase) and selected(name, module)
    ]


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    found = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    if len(found) > 1:
        raise DeviceMismatchError(
            "calibrate needs the model on one device; its parameters and buffers are on "
            f"{', '.join(sorted(str(d) for d in found))}"
        )
    if device is None:
        return found.pop() if found else torch.device("cpu")
    wanted = torch.device(device)
    if not found:
        return wanted
    actual = found.pop()
    if actual.type != wanted.type or (wanted.index is not None and actual.index != wanted.index):
        raise DeviceMismatchError(
            f"device={str(wanted)!r} was asked but the model is on {actual}; "
            f"move it first with model.to({str(wanted)!r})"
        )
    return actual


_BATCH_TYPES = "a tensor, a tuple/list of tensors or a dict of tensors"


def _to_device(batch: Any, index: int, device: torch.device) -> tuple[tuple, dict[str, Any]]:
    """The positional and keyword arguments of the model call for one batch, on ``device``."""
    if isinstance(batch, torch.Tensor):
        return (batch.to(device),), {}
    if isinstance(batch, (tuple, list)):
        for j, item in enumerate(batch):
            if not isinstance(item, torch.Tensor):
                raise BatchTypeError(
                    f"batch {index}[{j}] is a {type(item).__name__}; each batch must be "
                    f"{_BATCH_TYPES}"
                )
        return tuple(t.to(device) for t in batch), {}
    if isinstance(batch, Mapping):
        for name, item in batch.items():
            if not isinstance(item, torch.Tensor):
                raise BatchTypeError(
                    f"batch {index}[{name!r}] is a {type(item).__name__}; each batch must be "
                    f"{_BATCH_TYPES} (tokenize with return_tensors='pt')"
                )
        return (), {str(k): v.to(device) for k, v in batch.items()}
    raise BatchTypeError(
        f"batch {index} is a {type(batch).__name__}; each batch must be {_BATCH_TYPES}"
    )


def _first_tensor(args: tuple | list, kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    for value in args:
        if isinstance(value, torch.Tensor):
            return value
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    return None


_NO_KWARGS: Mapping[str, Any] = {}


def _progress(
    batches: Iterable[Any], total: int | None, enabled: bool | None, desc: str, initial: int
) -> Any:
    from tqdm.auto import tqdm

    disable = not (sys.stderr.isatty() if enabled is None else enabled)
    return tqdm(
        batches,
        total=total,
        initial=initial,
        desc=desc,
        unit="batch",
        disable=disable,
        file=sys.stderr,
    )


def _seconds_so_far(tally: _Tally) -> float:
    """The observer time of ``tally`` in this run so far (on CUDA: waits for its last event)."""
    if isinstance(tally, _CudaTally) and tally.events:
        tally.events[-1][1].synchronize()
        return sum(start.elapsed_time(end) for start, end in tally.events) / 1e3
    return tally.seconds


def _restore(
    store: Checkpoint, resume: bool, entries: list[ObservedTensor], device: torch.device
) -> SavedState | None:
    """Put a committed checkpoint's state into the fresh observers; ``None`` without one."""
    if not store.exists():
        return None
    if not resume:
        raise CheckpointError(
            f"{store.manifest} holds an earlier calibration: continue it with resume=True "
            f"(--resume), or remove {store.folder} to start over"
        )
    saved = store.read()
    for entry in entries:
        # The fingerprint matched, so the checkpoint has every key.
        item = saved.entries[entry.key]
        set_buffers(entry.observer, {name: t.to(device) for name, t in item.buffers.items()})
        entry.calls, entry.seconds = item.calls, item.seconds
    return saved


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    observer: ObserverSpec = "minmax",
    targets: Targets = (nn.Linear,),
    *,
    method: str | None = None,
    weights: bool = False,
    weight_observer: ObserverSpec | None = None,
    outputs: bool = False,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    sync: bool = False,
    group: Any = None,
    progress: bool | None = None,
    desc: str = "calibrating",
    metadata: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
) -> CalibrationResult:
    """Observe the inputs of ``model``'s target modules over ``batches``.

    Every selected module gets an observer on its input (the first tensor argument of its
    forward) through a forward pre-hook, plus, on request, one on its weight (observed once) and
    one on its output. The batches run in eval mode under ``torch.inference_mode()``; the hooks
    are removed and the modules' train/eval modes restored whatever happens (an error, a
    ``KeyboardInterrupt``). The model itself is not changed: observers live in the result.

    Args:
        model: the model, on one device.
        batches: an iterable of batches, each a tensor (``model(t)``), a tuple/list of tensors
            (``model(*b)``) or a dict of tensors such as a tokenizer's output (``model(**b)``);
            moved to the model's device.
        observer: observer of inputs and outputs: a short name (see :func:`observer_factory`), an
            observer class or a ``with_args`` factory.
        targets: the module types to observe, or a predicate ``(name, module) -> bool``.
        method: the amax search of ``observer="amax-histogram"`` (``entropy``, ``mse`` or
            ``percentile``; default ``entropy``).
        weights: also observe each target's ``weight`` once.
        weight_observer: observer of weights; default per-channel symmetric qint8 over axis 0
            (``default_per_channel_weight_observer``).
        outputs: also observe each target's output (its first tensor).
        device: the device calibration must run on; checked against the model's.
        max_batches: stop after this many batches.
        sync: after the batches, merge the observers across processes with
            ``tritonobs.distributed.sync_observers``.
        group: the process group for ``sync`` (``None``: the default group).
        progress: show a tqdm progress bar on stderr; ``None`` shows it when stderr is a TTY.
        desc: the progress bar's label.
        metadata: JSON-serialisable description stored in the result (and, with ``checkpoint``,
            part of what a resumed checkpoint must match).
        checkpoint: a folder for the observers' state: written every ``checkpoint_every``
            batches, after the last batch, and when SIGINT or SIGTERM arrives (after the batch
            in progress; then ``KeyboardInterrupt`` or ``SystemExit(143)`` is raised).
        checkpoint_every: batches between two checkpoints.
        resume: continue from the checkpoint in ``checkpoint``, if there is one: its observers'
            state is restored and as many batches as it has folded in are skipped (taken from
            ``batches`` without running the model), so the result equals an uninterrupted run's.

    Returns:
        The :class:`CalibrationResult`.

    Raises:
        NoTargetModulesError: no module of ``model`` is selected by ``targets``.
        EmptyBatchesError: ``batches`` yielded no batch.
        BatchTypeError: a batch, or an item of one, has the wrong type.
        DeviceMismatchError: the model is on several devices, or not on ``device``.
        CheckpointError: ``checkpoint`` holds a checkpoint and ``resume`` is false, its files are
            truncated or corrupt, or ``batches`` has fewer batches than it folded in.
        CheckpointMismatchError: the checkpoint is of another model, observer, batch count or
            ``metadata``; the message lists the differences.
        CalibrationError: ``resume`` without ``checkpoint``, ``checkpoint_every`` below 1, or
            ``method`` with another observer.
    """
    run_device = _model_device(model, device)
    modules = select_targets(model, targets)
    if not modules:
        raise NoTargetModulesError(
            f"{type(model).__name__} has no module selected by targets={targets!r}"
        )
    if checkpoint_every < 1:
        raise CalibrationError(f"checkpoint_every must be at least 1; got {checkpoint_every}")
    if resume and checkpoint is None:
        raise CalibrationError("resume=True needs the checkpoint folder (checkpoint=...)")
    make_observer = observer_factory(observer, method=method)
    make_weight_observer = None
    if weights:
        if weight_observer is None:
            from tritonobs.observer import default_per_channel_weight_observer

            weight_observer = default_per_channel_weight_observer
        make_weight_observer = observer_factory(weight_observer)

    def new_entry(name: str, role: Role, make: Callable[[], nn.Module]) -> ObservedTensor:
        return ObservedTensor(name, role, make().to(run_device))

    entries: list[ObservedTensor] = []
    weight_entries: list[tuple[ObservedTensor, torch.Tensor]] = []
    for name, module in modules:
        entries.append(new_entry(name, "input", make_observer))
        if make_weight_observer is not None:
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                entries.append(new_entry(name, "weight", make_weight_observer))
                weight_entries.append((entries[-1], weight))
        if outputs:
            entries.append(new_entry(name, "output", make_observer))

    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    if max_batches is not None:
        batches = itertools.islice(batches, max_batches)
        total = max_batches if total is None else min(total, max_batches)
    store = None
    restored = None
    if checkpoint is not None:
        store = Checkpoint(Path(checkpoint), fingerprint(model, modules, entries, total, metadata))
        restored = _restore(store, resume, entries, run_device)
    done = 0 if restored is None else restored.batches
    prior_seconds = 0.0 if restored is None else restored.seconds
    prior_overhead = 0.0 if restored is None else restored.overhead_seconds

    make_tally = _CudaTally if run_device.type == "cuda" else _Tally
    tallies = {(e.module, e.role): make_tally(e) for e in entries}
    training = {m: m.training for m in model.modules()}
    handles = []
    bar = None
    count = 0
    batch_overhead = 0.0
    signals = DeferredSignals()
    start = perf_counter()

    def state() -> SavedState:
        """The observers' state after the batches folded in so far."""
        return SavedState(
            done + count,
            prior_seconds + perf_counter() - start,
            prior_overhead + batch_overhead + sum(one.overhead for one in tallies.values()),
            {
                e.key: SavedEntry(
                    e.calls + one.calls,
                    e.seconds + _seconds_so_far(one),
                    observer_buffers(e.observer),
                )
                for e, one in zip(entries, tallies.values(), strict=True)
            },
        )

    try:
        for name, module in modules:
            handles.append(
                module.register_forward_pre_hook(
                    tallies[name, "input"].input_hook, with_kwargs=True
                )
            )
            if outputs:
                handles.append(module.register_forward_hook(tallies[name, "output"].output_hook))
        model.eval()
        with torch.inference_mode(), signals if store is not None else contextlib.nullcontext():
            if restored is None:
                # A checkpoint holds the weights' observers after their one observation.
                for entry, weight in weight_entries:
                    tallies[entry.module, entry.role].observe(weight, perf_counter())
            remaining = iter(batches)
            skipped = sum(1 for _ in itertools.islice(remaining, done))
            if skipped < done:
                raise CheckpointError(
                    f"the batches ended after {skipped}, but the checkpoint in {checkpoint} has "
                    f"folded in {done}: resume with the same batches"
                )
            written = done
            bar = _progress(remaining, total, progress, desc, done)
            for batch in bar:
                entered = perf_counter()
                args, kwargs = _to_device(batch, done + count, run_device)
                batch_overhead += perf_counter() - entered
                model(*args, **kwargs)
                count += 1
                if store is not None and (
                    signals.pending is not None or (done + count) % checkpoint_every == 0
                ):
                    store.write(state())
                    written = done + count
                    signals.stop()
            if store is not None and written != done + count:
                store.write(state())
            signals.stop()
        if run_device.type == "cuda":
            # The total covers the GPU work queued by the last batch.
            torch.cuda.synchronize(run_device)
    finally:
        if bar is not None:
            bar.close()
        for handle in handles:
            handle.remove()
        for module, was_training in training.items():
            module.training = was_training
    seconds = prior_seconds + perf_counter() - start
    if done + count == 0:
        raise EmptyBatchesError("batches yielded no batch; calibrate needs at least one")
    for one in tallies.values():
        one.finish()
    overhead = prior_overhead + batch_overhead + sum(one.overhead for one in tallies.values())
    for entry in entries:
        _release_inference_buffers(entry.observer)
    idle = [e.key for e in entries if e.calls == 0]
    if idle:
        warnings.warn(
            f"{len(idle)} observed tensors saw no data (their modules never ran): "
            f"{', '.join(idle[:5])}{', ...' if len(idle) > 5 else ''}",
            stacklevel=2,
        )
    if sync:
        from tritonobs.distributed import sync_observers

        sync_observers([e.observer for e in entries], group=group)
    return CalibrationResult(entries, done + count, seconds, metadata, overhead_seconds=overhead)


def _release_inference_buffers(observer: nn.Module) -> None:
    """Buffers created under inference mode (per-channel min/max on the first batch) cannot be
    updated in place outside it; replace them with ordinary copies."""
    for module in observer.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_inference():
                setattr(module, name, buffer.clone())
