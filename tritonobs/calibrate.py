"""Calibrate a model: observe what flows into its layers and hand back quantization parameters.

:func:`calibrate` attaches one observer to the input of every target module (``nn.Linear`` by
default; weights and outputs on request) through forward hooks, runs the calibration batches under
``torch.inference_mode()``, always removes its hooks, and returns a :class:`CalibrationResult`:
per-layer scale/zero point and statistics, a summary table, and save/load (tensors in
safetensors, metadata in JSON) that restores every observer's state exactly.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import torch
from torch import nn

from tritonobs._base import _TorchAOObserverBase

ObserverSpec = str | Callable[[], nn.Module]
Targets = type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool]
Role = Literal["input", "weight", "output"]

OBSERVER_NAMES = ("minmax", "moving-average", "per-channel", "histogram")

FORMAT_NAME = "tritonobs.calibration"
FORMAT_VERSION = 1

# Constructor arguments that rebuild an observer; the derived range attributes are set afterwards
# (passing them back through the constructor would apply reduce_range twice).
_CONSTRUCTOR_ATTRS = ("dtype", "qscheme", "ch_axis", "averaging_constant", "bins", "is_dynamic")
_RANGE_ATTRS = ("quant_min", "quant_max", "has_customized_qrange", "reduce_range")
# Observer classes that load() may import by name.
_LOADABLE_MODULES = ("tritonobs.", "torch.ao.quantization.")


class CalibrationError(ValueError):
    """Bad input to :func:`calibrate`; the model is left without the calibration hooks."""


class NoTargetModulesError(CalibrationError):
    """The model has no module that ``targets`` selects."""


class EmptyBatchesError(CalibrationError):
    """The batch iterable yielded nothing."""


class BatchTypeError(CalibrationError, TypeError):
    """A batch is not a tensor, a tuple/list of tensors or a dict of tensors."""


class DeviceMismatchError(CalibrationError):
    """The model is spread over several devices, or is not on the requested one."""


def observer_factory(spec: ObserverSpec, *, torch_ao: bool = False) -> Callable[[], nn.Module]:
    """The factory that builds one observer per observed tensor.

    Args:
        spec: an observer class or ``with_args`` factory, or one of the short names
            ``minmax`` (``MinMaxObserver``), ``moving-average`` (``MovingAverageMinMaxObserver``),
            ``per-channel`` (``PerChannelMinMaxObserver`` over the last axis, the feature axis of
            a Linear input) and ``histogram`` (``HistogramObserver``), all with default arguments.
        torch_ao: resolve a short name to torch.ao's observer instead of tritonobs' (the reference
            used by ``tritonobs calibrate --compare-torch-ao``).

    Returns:
        A callable taking no argument and returning a new observer module.

    Raises:
        ValueError: ``spec`` is an unknown short name.
        TypeError: ``spec`` is neither a string nor callable.
    """
    if isinstance(spec, str):
        if spec not in OBSERVER_NAMES:
            raise ValueError(
                f"unknown observer {spec!r}; choose one of {', '.join(OBSERVER_NAMES)}"
            )
        if torch_ao:
            from torch.ao.quantization import observer as classes
        else:
            import tritonobs.observer as classes
        return {
            "minmax": classes.MinMaxObserver,
            "moving-average": classes.MovingAverageMinMaxObserver,
            "per-channel": classes.PerChannelMinMaxObserver.with_args(ch_axis=-1),
            "histogram": classes.HistogramObserver,
        }[spec]
    if not callable(spec):
        raise TypeError(
            f"observer must be an observer class, a with_args factory or one of "
            f"{', '.join(OBSERVER_NAMES)}; got {type(spec).__name__}"
        )
    return spec


@dataclass
class ObservedTensor:
    """One observed tensor: a target module's input, weight or output, and its observer.

    Attributes:
        module: the module's qualified name in the model (``""`` for the model itself).
        role: ``"input"``, ``"weight"`` or ``"output"``.
        observer: the observer module holding the statistics.
        calls: how many tensors the observer has seen.
        seconds: time spent in the observer's forward.
    """

    module: str
    role: Role
    observer: nn.Module
    calls: int = 0
    seconds: float = 0.0

    @property
    def key(self) -> str:
        """``"<module>.<role>"``: the name of this entry in the result and in saved files."""
        return f"{self.module}.{self.role}" if self.module else self.role

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The observer's ``calculate_qparams()`` (scale, zero point). Synchronizes."""
        return self.observer.calculate_qparams()  # type: ignore[operator]


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


def _range(observer: nn.Module) -> tuple[float, float] | None:
    """Smallest and largest observed value, over all channels; ``None`` before any data."""
    min_val = getattr(observer, "min_val", None)
    max_val = getattr(observer, "max_val", None)
    if not isinstance(min_val, torch.Tensor) or not isinstance(max_val, torch.Tensor):
        return None
    if min_val.numel() == 0 or max_val.numel() == 0:
        return None
    low, high = float(min_val.min()), float(max_val.max())
    return (low, high) if low <= high else None


class CalibrationResult:
    """What :func:`calibrate` observed: one :class:`ObservedTensor` per key, in model order.

    Args:
        entries: the observed tensors.
        batches: number of batches run.
        seconds: wall time of the calibration loop (model, observers and calibrate's own code;
            on CUDA up to the end of the queued GPU work).
        metadata: free-form JSON-serialisable description (saved with the result).
        overhead_seconds: calibrate's own host time in that loop, outside the model and the
            observers: its hooks from entry to exit less the observer call (finding the tensor,
            timing, counting) and moving each batch to the device. PyTorch's dispatch of the
            hooks inside ``nn.Module.__call__`` is not calibrate's code and not in it
            (docs/calibrate.md measures both). ``None`` when unknown (a file saved without it).
    """

    def __init__(
        self,
        entries: Iterable[ObservedTensor],
        batches: int,
        seconds: float,
        metadata: dict[str, Any] | None = None,
        *,
        overhead_seconds: float | None = None,
    ) -> None:
        self.entries: dict[str, ObservedTensor] = {e.key: e for e in entries}
        self.batches = batches
        self.seconds = seconds
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.overhead_seconds = overhead_seconds

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __getitem__(self, key: str) -> ObservedTensor:
        return self.entries[key]

    @property
    def observers(self) -> dict[str, nn.Module]:
        """The observer of each key."""
        return {k: e.observer for k, e in self.entries.items()}

    @property
    def observer_seconds(self) -> float:
        """Time spent in all observers' forward together."""
        return sum(e.seconds for e in self.entries.values())

    def qparams(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Scale and zero point of every key whose observer has seen data. Synchronizes."""
        return {k: e.qparams() for k, e in self.entries.items() if e.calls > 0}

    def statistics(self) -> dict[str, dict[str, float | int | None]]:
        """Per key: ``calls``, ``seconds``, observed ``min``/``max`` (over all channels; ``None``
        before any data or for observers without min/max) and ``nonfinite`` (NaN/inf values
        skipped, for observers that count them)."""
        stats: dict[str, dict[str, float | int | None]] = {}
        for key, entry in self.entries.items():
            value_range = _range(entry.observer)
            nonfinite = getattr(entry.observer, "nonfinite_count", None)
            stats[key] = {
                "calls": entry.calls,
                "seconds": entry.seconds,
                "min": None if value_range is None else value_range[0],
                "max": None if value_range is None else value_range[1],
                "nonfinite": int(nonfinite) if isinstance(nonfinite, torch.Tensor) else None,
            }
        return stats

    def table(self) -> str:
        """A fixed-width table: layer, role, calls, range, scale, zero point, observer time.

        Per-channel scale and zero point show as ``lowest..highest (C ch)``.
        """
        header = ("layer", "role", "calls", "min", "max", "scale", "zero_point", "time ms")
        rows = [header]
        qparams = self.qparams()
        for key, entry in self.entries.items():
            value_range = _range(entry.observer)
            scale, zero_point = qparams.get(key, (None, None))
            rows.append(
                (
                    entry.module or "<model>",
                    entry.role,
                    str(entry.calls),
                    "-" if value_range is None else f"{value_range[0]:.5g}",
                    "-" if value_range is None else f"{value_range[1]:.5g}",
                    _format_values(scale),
                    _format_values(zero_point),
                    f"{entry.seconds * 1e3:.3f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for n, row in enumerate(rows):
            cells = [
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        overhead = self.overhead_seconds
        lines.append(
            f"{len(self.entries)} observed tensors, {self.batches} batches, "
            f"observers {self.observer_seconds * 1e3:.1f} ms, calibrate overhead "
            f"{'not recorded' if overhead is None else f'{overhead * 1e3:.2f} ms'}, "
            f"total {self.seconds:.2f} s"
        )
        return "\n".join(lines)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.safetensors`` (tensors) and ``<stem>.json`` (metadata).

        The safetensors file holds, per key, ``<key>.scale`` and ``<key>.zero_point`` (keys with
        data only) and every observer buffer as ``<key>.state.<buffer>`` (non-persistent buffers
        such as ``nonfinite_count`` included). The JSON file holds the format version, each
        observer's class and constructor configuration, call counts, timings and ``metadata``.

        Args:
            path: the file name, with or without a ``.safetensors``/``.json`` suffix.

        Returns:
            The paths of the safetensors file and of the JSON file.
        """
        from safetensors.torch import save_file

        tensors_path, json_path = _paths(path)
        tensors: dict[str, torch.Tensor] = {}
        entries = []
        for key, (scale, zero_point) in self.qparams().items():
            tensors[f"{key}.scale"] = scale
            tensors[f"{key}.zero_point"] = zero_point
        for key, entry in self.entries.items():
            observer = entry.observer
            persistent = set(observer.state_dict())
            buffers = dict(observer.named_buffers())
            for name, buffer in buffers.items():
                tensors[f"{key}.state.{name}"] = buffer
            cls = type(observer)
            entries.append(
                {
                    "key": key,
                    "module": entry.module,
                    "role": entry.role,
                    "observer": f"{cls.__module__}:{cls.__qualname__}",
                    "config": _observer_config(observer),
                    "buffers": {name: name in persistent for name in buffers},
                    "calls": entry.calls,
                    "seconds": entry.seconds,
                }
            )
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tensors_path), metadata={"format": "pt"})
        document = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "tensors": tensors_path.name,
            "torch_version": torch.__version__,
            "batches": self.batches,
            "seconds": self.seconds,
            "overhead_seconds": self.overhead_seconds,
            "metadata": self.metadata,
            "entries": entries,
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        return tensors_path, json_path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> CalibrationResult:
        """Rebuild a saved result: same keys, observer classes, configuration and buffers.

        Args:
            path: as given to :meth:`save` (either file, or the common stem).
            device: where the observers' buffers go.

        Returns:
            The result; its observers compute the same qparams as the saved ones.

        Raises:
            ValueError: the JSON file is not a tritonobs calibration of a known version, or names
                an observer class outside tritonobs and torch.ao.
        """
        from safetensors.torch import load_file

        tensors_path, json_path = _paths(path)
        document = json.loads(json_path.read_text())
        if document.get("format") != FORMAT_NAME or document.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{json_path} is not a {FORMAT_NAME} file of version {FORMAT_VERSION} "
                f"(format={document.get('format')!r}, version={document.get('version')!r})"
            )
        tensors = load_file(str(tensors_path), device=str(device))
        entries = []
        for item in document["entries"]:
            observer = _build_observer(item["observer"], item["config"])
            key = item["key"]
            for name in item["buffers"]:
                # The saved buffers replace the fresh ones whole (per-channel min/max start as [0]).
                setattr(observer, name, tensors[f"{key}.state.{name}"])
            entries.append(
                ObservedTensor(
                    module=item["module"],
                    role=item["role"],
                    observer=observer.to(device),
                    calls=item["calls"],
                    seconds=item["seconds"],
                )
            )
        return cls(
            entries,
            document["batches"],
            document["seconds"],
            document["metadata"],
            overhead_seconds=document.get("overhead_seconds"),
        )


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _format_values(values: torch.Tensor | None) -> str:
    if values is None:
        return "-"
    flat = values.detach().flatten().double()
    if flat.numel() == 1:
        return f"{float(flat[0]):.5g}"
    return f"{float(flat.min()):.4g}..{float(flat.max()):.4g} ({flat.numel()} ch)"


def _encode(value: Any) -> Any:
    if isinstance(value, (torch.dtype, torch.qscheme)):
        return {"torch": str(value).removeprefix("torch.")}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"torch"}:
        decoded = getattr(torch, value["torch"], None)
        if not isinstance(decoded, (torch.dtype, torch.qscheme)):
            raise ValueError(f"unknown torch dtype or qscheme {value['torch']!r}")
        return decoded
    return value


def _observer_config(observer: nn.Module) -> dict[str, Any]:
    return {
        name: _encode(getattr(observer, name))
        for name in _CONSTRUCTOR_ATTRS + _RANGE_ATTRS
        if hasattr(observer, name)
    }


def _build_observer(qualified_name: str, config: dict[str, Any]) -> nn.Module:
    module_name, _, class_name = qualified_name.partition(":")
    if not module_name.startswith(_LOADABLE_MODULES):
        raise ValueError(
            f"refusing to load observer class {qualified_name!r}: only tritonobs and "
            "torch.ao.quantization observers are loaded by name"
        )
    obj: Any = importlib.import_module(module_name)
    for part in class_name.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"{qualified_name!r} is not an nn.Module class")
    values = {name: _decode(value) for name, value in config.items()}
    accepted = inspect.signature(obj.__init__).parameters
    observer = obj(**{k: v for k, v in values.items() if k in _CONSTRUCTOR_ATTRS and k in accepted})
    for name in _RANGE_ATTRS:
        if name in values:
            setattr(observer, name, values[name])
    return observer


def _select_targets(model: nn.Module, targets: Targets) -> list[tuple[str, nn.Module]]:
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


def _progress(batches: Iterable[Any], total: int | None, enabled: bool | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    disable = not (sys.stderr.isatty() if enabled is None else enabled)
    return tqdm(batches, total=total, desc=desc, unit="batch", disable=disable, file=sys.stderr)


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    observer: ObserverSpec = "minmax",
    targets: Targets = (nn.Linear,),
    *,
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
        metadata: JSON-serialisable description stored in the result.

    Returns:
        The :class:`CalibrationResult`.

    Raises:
        NoTargetModulesError: no module of ``model`` is selected by ``targets``.
        EmptyBatchesError: ``batches`` yielded no batch.
        BatchTypeError: a batch, or an item of one, has the wrong type.
        DeviceMismatchError: the model is on several devices, or not on ``device``.
    """
    run_device = _model_device(model, device)
    modules = _select_targets(model, targets)
    if not modules:
        raise NoTargetModulesError(
            f"{type(model).__name__} has no module selected by targets={targets!r}"
        )
    make_observer = observer_factory(observer)
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

    make_tally = _CudaTally if run_device.type == "cuda" else _Tally
    tallies = {(e.module, e.role): make_tally(e) for e in entries}
    training = {m: m.training for m in model.modules()}
    handles = []
    bar = None
    count = 0
    batch_overhead = 0.0
    start = perf_counter()
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
        total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        if max_batches is not None:
            batches = itertools.islice(batches, max_batches)
            total = max_batches if total is None else min(total, max_batches)
        with torch.inference_mode():
            for entry, weight in weight_entries:
                tallies[entry.module, entry.role].observe(weight, perf_counter())
            bar = _progress(batches, total, progress, desc)
            for batch in bar:
                entered = perf_counter()
                args, kwargs = _to_device(batch, count, run_device)
                batch_overhead += perf_counter() - entered
                model(*args, **kwargs)
                count += 1
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
    seconds = perf_counter() - start
    if count == 0:
        raise EmptyBatchesError("batches yielded no batch; calibrate needs at least one")
    for one in tallies.values():
        one.finish()
    overhead = batch_overhead + sum(one.overhead for one in tallies.values())
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
    return CalibrationResult(entries, count, seconds, metadata, overhead_seconds=overhead)


def _release_inference_buffers(observer: nn.Module) -> None:
    """Buffers created under inference mode (per-channel min/max on the first batch) cannot be
    updated in place outside it; replace them with ordinary copies."""
    for module in observer.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_inference():
                setattr(module, name, buffer.clone())
