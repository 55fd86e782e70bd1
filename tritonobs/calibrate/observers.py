"""Which observers calibrate builds, and how an observer is described and rebuilt from a file."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tritonobs.calibrate.errors import CalibrationError

ObserverSpec = str | Callable[[], nn.Module]
Role = Literal["input", "weight", "output"]

OBSERVER_NAMES = ("minmax", "moving-average", "per-channel", "histogram", "amax-histogram")
# The short names torch.ao has an observer for (what --compare-torch-ao can compare).
TORCH_AO_OBSERVER_NAMES = ("minmax", "moving-average", "per-channel", "histogram")

# Constructor arguments that rebuild an observer; the derived range attributes are set afterwards
# (passing them back through the constructor would apply reduce_range twice). The second line is
# AmaxHistogramObserver's (max_bins sizes its fixed-capacity buffers).
_CONSTRUCTOR_ATTRS = (
    *("dtype", "qscheme", "ch_axis", "averaging_constant", "bins", "is_dynamic"),
    *("skip_zeros", "method", "num_bits", "unsigned", "start_bin", "stride", "percentile"),
    "max_bins",
)
_RANGE_ATTRS = ("quant_min", "quant_max", "has_customized_qrange", "reduce_range")
# Observer classes that load() may import by name.
_LOADABLE_MODULES = ("tritonobs.", "torch.ao.quantization.")


def observer_factory(
    spec: ObserverSpec, *, torch_ao: bool = False, method: str | None = None
) -> Callable[[], nn.Module]:
    """The factory that builds one observer per observed tensor.

    Args:
        spec: an observer class or ``with_args`` factory, or one of the short names
            ``minmax`` (``MinMaxObserver``), ``moving-average`` (``MovingAverageMinMaxObserver``),
            ``per-channel`` (``PerChannelMinMaxObserver`` over the last axis, the feature axis of
            a Linear input), ``histogram`` (``HistogramObserver``) and ``amax-histogram``
            (``AmaxHistogramObserver``, ModelOpt's histogram calibrator), all with default
            arguments.
        torch_ao: resolve a short name to torch.ao's observer instead of tritonobs' (the reference
            used by ``tritonobs calibrate --compare-torch-ao``).
        method: the amax search of ``amax-histogram`` (``entropy``, ``mse`` or ``percentile``);
            ``None`` keeps the observer's default (``entropy``).

    Returns:
        A callable taking no argument and returning a new observer module.

    Raises:
        CalibrationError: ``spec`` is an unknown short name, ``amax-histogram`` with
            ``torch_ao`` (torch.ao has no such observer), or ``method`` with another observer
            or an unknown method (a ``ValueError``).
        TypeError: ``spec`` is neither a string nor callable.
    """
    if method is not None and spec != "amax-histogram":
        raise CalibrationError(
            f"method={method!r} is the amax search of observer 'amax-histogram'; "
            f"observer {spec!r} has none"
        )
    if isinstance(spec, str):
        if spec not in OBSERVER_NAMES:
            raise CalibrationError(
                f"unknown observer {spec!r}; choose one of {', '.join(OBSERVER_NAMES)}"
            )
        if spec == "amax-histogram":
            return _amax_histogram(torch_ao, method)
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


def _amax_histogram(torch_ao: bool, method: str | None) -> Callable[[], nn.Module]:
    from tritonobs.llm_calibrators import HISTOGRAM_METHODS, AmaxHistogramObserver

    if torch_ao:
        raise CalibrationError(
            "torch.ao has no amax-histogram observer (it is ModelOpt's histogram calibrator; "
            "tests/test_amax_histogram.py compares it with ModelOpt)"
        )
    if method is None:
        return AmaxHistogramObserver
    if method not in HISTOGRAM_METHODS:
        raise CalibrationError(
            f"unknown method {method!r}; choose one of {', '.join(HISTOGRAM_METHODS)}"
        )
    return AmaxHistogramObserver.with_args(method=method)


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


def class_name(observer: nn.Module) -> str:
    """``module:QualifiedName`` of the observer's class, as saved files record it."""
    cls = type(observer)
    return f"{cls.__module__}:{cls.__qualname__}"


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


def observer_config(observer: nn.Module) -> dict[str, Any]:
    """The JSON-serialisable constructor and range arguments that rebuild ``observer``."""
    return {
        name: _encode(getattr(observer, name))
        for name in _CONSTRUCTOR_ATTRS + _RANGE_ATTRS
        if hasattr(observer, name)
    }


def build_observer(qualified_name: str, config: dict[str, Any]) -> nn.Module:
    """A new observer of class ``qualified_name`` (``module:Class``) built from ``config``.

    Raises:
        ValueError: the class is outside tritonobs and torch.ao, or not a module.
    """
    module_name, _, name = qualified_name.partition(":")
    if not module_name.startswith(_LOADABLE_MODULES):
        raise ValueError(
            f"refusing to load observer class {qualified_name!r}: only tritonobs and "
            "torch.ao.quantization observers are loaded by name"
        )
    obj: Any = importlib.import_module(module_name)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"{qualified_name!r} is not an nn.Module class")
    values = {key: _decode(value) for key, value in config.items()}
    accepted = inspect.signature(obj.__init__).parameters
    observer = obj(**{k: v for k, v in values.items() if k in _CONSTRUCTOR_ATTRS and k in accepted})
    for key in _RANGE_ATTRS:
        if key in values:
            setattr(observer, key, values[key])
    return observer


def set_buffers(observer: nn.Module, buffers: Mapping[str, torch.Tensor]) -> None:
    """Replace the observer's buffers whole by name (``named_buffers`` names): per-channel
    min/max start as ``[0]`` and take their shape from the first batch."""
    for name, tensor in buffers.items():
        owner, _, attr = name.rpartition(".")
        setattr(observer.get_submodule(owner), attr, tensor)
