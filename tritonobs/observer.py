"""Drop-in replacements for ``torch.ao.quantization.observer``.

Same names, constructor arguments, buffers, state_dict format and ``calculate_qparams`` results as
the installed torch.ao. Forward never synchronizes with the host and traces under
``torch.compile(fullgraph=True)``: each forward is one ``tritonobs::*`` op (Triton on CUDA, torch
ops on CPU) that updates the observer's buffers in place.

NaN/inf policy: non-finite input values never reach min/max or a histogram. They are skipped and
counted in the non-persistent buffer ``nonfinite_count``; a batch with no finite value leaves the
statistics unchanged. torch.ao instead lets them through (min/max become NaN or inf).

Input checks: a non-floating-point input is a ``TypeError`` naming the observer and the dtype
(torch.ao casts integers to float); a per-channel batch whose ``ch_axis`` is out of range or whose
channel count differs from the observed one is a ``ValueError``. Statistics are computed in
float32 whatever the buffers' dtype. docs/observers.md lists every deliberate difference.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch

from tritonobs._base import (
    FLOAT_INPUT_DTYPES,
    ObserverBase,
    UniformQuantizationObserverBase,
    detached,
)
from tritonobs.histogram_observer import HistogramObserver
from tritonobs.ops.aminmax import aminmax
from tritonobs.ops.aminmax_per_channel import aminmax_per_channel
from tritonobs.qparams import PER_CHANNEL_QSCHEMES, PER_TENSOR_QSCHEMES

__all__ = [
    "default_affine_fixed_qparams_observer",
    "default_debug_observer",
    "default_dynamic_quant_observer",
    "default_fixed_qparams_range_0to1_observer",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "default_histogram_observer",
    "default_observer",
    "default_per_channel_weight_observer",
    "default_placeholder_observer",
    "default_reuse_input_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_weight_observer",
    "get_observer_state_dict",
    "load_observer_state_dict",
    "per_channel_weight_observer_range_neg_127_to_127",
    "weight_observer_range_neg_127_to_127",
    "FixedQParamsObserver",
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "NoopObserver",
    "ObserverBase",
    "PerChannelMinMaxObserver",
    "PlaceholderObserver",
    "RecordingObserver",
    "ReuseInputObserver",
    "UniformQuantizationObserverBase",
]

_EPS = torch.finfo(torch.float32).eps


class _NonfiniteCounter:
    """Mixin: the non-persistent ``nonfinite_count`` buffer (NaN/inf values skipped so far)."""

    nonfinite_count: torch.Tensor

    def _register_nonfinite_count(self, factory_kwargs: dict[str, Any]) -> None:
        device = factory_kwargs.get("device")
        self.register_buffer(  # type: ignore[attr-defined]
            "nonfinite_count", torch.zeros((), dtype=torch.int64, device=device), persistent=False
        )


class MinMaxObserver(_NonfiniteCounter, UniformQuantizationObserverBase):
    r"""Running per-tensor min/max; scale and zero point as torch.ao's ``MinMaxObserver``.

    ``min_val = min(min_val, min(X))``, ``max_val = max(max_val, max(X))`` over the finite values of
    each batch ``X``; qparams as in :func:`tritonobs.qparams.calculate_qparams`.

    Args: as :class:`UniformQuantizationObserverBase`; ``qscheme`` must be per tensor.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in PER_TENSOR_QSCHEMES:
            raise NotImplementedError(
                f"{type(self).__name__}'s qscheme only support torch.per_tensor_symmetric "
                f"and torch.per_tensor_affine; got {qscheme}"
            )
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf"), **factory_kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **factory_kwargs))
        self._register_nonfinite_count(factory_kwargs)
        if (
            self.qscheme == torch.per_tensor_symmetric
            and self.reduce_range
            and self.dtype == torch.quint8
        ):
            raise NotImplementedError("Cannot reduce range for symmetric quantization for quint8")

    _averaging_constant: float | None = None

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Fold ``x_orig``'s finite values into the running min/max; returns ``x_orig``.

        Args:
            x_orig: floating-point tensor (float16, bfloat16, float32, float64), any shape and
                strides; an empty one is returned with the state unchanged.

        Returns:
            ``x_orig`` itself.

        Raises:
            TypeError: ``x_orig`` is not a floating-point tensor.
        """
        if not (isinstance(x_orig, torch.Tensor) and x_orig.dtype in FLOAT_INPUT_DTYPES):
            self._check_input(x_orig)  # raises the TypeError
        if x_orig.numel() == 0:
            return x_orig
        # One dict instead of an nn.Module.__getattr__ per buffer: the host path of a CUDA
        # forward is counted in microseconds.
        buffers = self._buffers
        aminmax(
            detached(x_orig),
            buffers["min_val"],
            buffers["max_val"],
            buffers["nonfinite_count"],
            self._averaging_constant,
        )
        return x_orig

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Scale and zero point from the running min/max. Synchronizes with the host."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def reset_min_max_vals(self) -> None:
        """Back to the uninitialised ``(+inf, -inf)``."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))


class MovingAverageMinMaxObserver(MinMaxObserver):
    r"""Moving average of per-tensor min/max, as torch.ao's ``MovingAverageMinMaxObserver``.

    ``x_min = min(X)`` on the first batch, then ``x_min + c * (min(X) - x_min)`` (likewise max).

    Args:
        averaging_constant: ``c`` above.
        others: as :class:`MinMaxObserver`.
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in PER_TENSOR_QSCHEMES:
            raise NotImplementedError(
                f"MovingAverageMinMaxObserver's qscheme only support torch.per_tensor_symmetric "
                f"and torch.per_tensor_affine. but got: {qscheme}"
            )
        self.averaging_constant = averaging_constant
        if is_dynamic and self.averaging_constant != 1:
            raise NotImplementedError(
                "MovingAverageMinMaxObserver doesn't support dynamic quantization for "
                f"averaging constant of {self.averaging_constant}"
            )
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )

    @property
    def _averaging_constant(self) -> float:  # type: ignore[override]
        return float(self.averaging_constant)


class PerChannelMinMaxObserver(_NonfiniteCounter, UniformQuantizationObserverBase):
    r"""Running min/max per channel of ``ch_axis``, as torch.ao's ``PerChannelMinMaxObserver``.

    The input is read in place as ``[outer, C, inner]`` (no permuted copy). ``min_val``/``max_val``
    are ``[0]`` until the first batch, then ``[C]``.

    Args:
        ch_axis: channel axis (negative counts from the end).
        others: as :class:`UniformQuantizationObserverBase`; ``qscheme`` must be per channel.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in PER_CHANNEL_QSCHEMES:
            raise NotImplementedError(
                f"{type(self).__name__}'s qscheme only support torch.per_channel_symmetric, "
                f"torch.per_channel_affine and torch.per_channel_affine_float_qparams; got {qscheme}"
            )
        if is_dynamic:
            raise NotImplementedError(f"{type(self).__name__} doesn't support dynamic quantization")
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", torch.tensor([], **factory_kwargs))
        self.register_buffer("max_val", torch.tensor([], **factory_kwargs))
        self._register_nonfinite_count(factory_kwargs)
        if (
            self.qscheme == torch.per_channel_symmetric
            and self.reduce_range
            and self.dtype == torch.quint8
        ):
            raise NotImplementedError("Cannot reduce range for symmetric quantization for quint8")

    _averaging_constant: float | None = None

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Fold ``x_orig``'s finite values into the per-channel min/max; returns ``x_orig``.

        Args:
            x_orig: floating-point tensor with at least one dimension, read in place as
                ``[outer, C, inner]`` around ``ch_axis``; a 1-d batch is one value per channel.
                An empty one is returned with the state unchanged.

        Returns:
            ``x_orig`` itself.

        Raises:
            TypeError: ``x_orig`` is not floating point.
            ValueError: ``ch_axis`` is out of range for ``x_orig``, or its channel count differs
                from the one observed so far (the state is left unchanged).
        """
        if not (isinstance(x_orig, torch.Tensor) and x_orig.dtype in FLOAT_INPUT_DTYPES):
            self._check_input(x_orig)  # raises the TypeError
        if x_orig.numel() == 0:
            return x_orig
        ndim = x_orig.dim()
        if not -ndim <= self.ch_axis < ndim:
            raise ValueError(
                f"{type(self).__name__}: ch_axis={self.ch_axis} is out of range for a batch with "
                f"{ndim} dimensions (shape {tuple(x_orig.shape)})"
            )
        axis = self.ch_axis % ndim
        channels = x_orig.shape[axis]
        buffers = self._buffers  # see MinMaxObserver.forward
        min_val, max_val = buffers["min_val"], buffers["max_val"]
        observed = min_val.shape[0]
        if observed == channels:
            aminmax_per_channel(
                detached(x_orig),
                axis,
                min_val,
                max_val,
                buffers["nonfinite_count"],
                self._averaging_constant,
            )
            return x_orig
        if observed != 0:
            raise ValueError(
                f"{type(self).__name__}: has observed {observed} channels on axis "
                f"{self.ch_axis}; this batch has {channels} (shape {tuple(x_orig.shape)})"
            )
        # First batch: the [0]-shaped buffers become [C]. Their data is swapped, not the tensors
        # (a DataParallel replica shares them, as torch.ao's resize_ does); torch.compile traces
        # neither resize_ nor set_ on a buffer mutated in the same graph, hence the fresh tensors
        # and the copies.
        first_min = torch.full(
            (channels,), float("inf"), dtype=min_val.dtype, device=min_val.device
        )
        first_max = torch.full(
            (channels,), float("-inf"), dtype=max_val.dtype, device=max_val.device
        )
        aminmax_per_channel(
            detached(x_orig),
            axis,
            first_min,
            first_max,
            buffers["nonfinite_count"],
            self._averaging_constant,
        )
        min_val.data = first_min.clone()
        max_val.data = first_max.clone()
        return x_orig

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Per-channel scale and zero point. Synchronizes with the host."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        version = local_metadata.get("version")
        if version is not None and version < 3:
            # Version 2 named the buffers min_vals/max_vals.
            for name in ("min_val", "max_val"):
                if prefix + name + "s" in state_dict:
                    state_dict[prefix + name] = state_dict.pop(prefix + name + "s")
        for name in ("min_val", "max_val"):
            key = prefix + name
            if key in state_dict:
                current = getattr(self, name)
                # The buffers are [0] before the first batch: take the saved shape (in place,
                # as torch.ao's resize_).
                current.data = current.new_empty(state_dict[key].shape)
            elif strict:
                missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def reset_min_max_vals(self) -> None:
        """Back to the uninitialised ``[0]``-shaped buffers (the same tensors)."""
        self.min_val.data = self.min_val.new_empty(0)
        self.max_val.data = self.max_val.new_empty(0)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    r"""Moving average of per-channel min/max, as torch.ao's class of that name.

    Args:
        averaging_constant: moving-average constant ``c``.
        others: as :class:`PerChannelMinMaxObserver`.
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in PER_CHANNEL_QSCHEMES:
            raise NotImplementedError(
                "MovingAveragePerChannelMinMaxObserver's qscheme only support "
                "torch.per_channel_symmetric, torch.per_channel_affine and "
                f"torch.per_channel_affine_float_qparams; got {qscheme}"
            )
        if is_dynamic:
            raise NotImplementedError(
                "MovingAveragePerChannelMinMaxObserver doesn't support dynamic quantization"
            )
        super().__init__(
            ch_axis=ch_axis,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        self.averaging_constant = averaging_constant

    @property
    def _averaging_constant(self) -> float:  # type: ignore[override]
        return float(self.averaging_constant)


class FixedQParamsObserver(ObserverBase):
    """Hands back a fixed scale and zero point; forward passes the input through.

    Args:
        scale: the fixed scale.
        zero_point: the fixed zero point.
        dtype, qscheme, quant_min, quant_max: passed on to the quantized module.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int = 0,
        quant_max: int = 255,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if is_dynamic:
            raise NotImplementedError("FixedQParamsObserver doesn't support dynamic quantization")
        super().__init__(dtype=dtype, is_dynamic=is_dynamic, **kwargs)
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int))
        self.qscheme = qscheme

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.scale, self.zero_point


class _PassThroughObserver(ObserverBase):
    """Forward returns its input; ``calculate_qparams`` is an error (these observers only carry
    configuration to the quantized module)."""

    def forward(self, x: Any) -> Any:
        return x

    def calculate_qparams(self) -> Any:  # type: ignore[override]
        raise Exception(  # noqa: TRY002  (torch.ao raises a bare Exception here)
            f"calculate_qparams should not be called for {type(self).__name__}"
        )


class PlaceholderObserver(_PassThroughObserver):
    """Carries dtype/qscheme/range to the quantized module's ``from_float`` (e.g. float16).

    Args:
        dtype: target dtype.
        custom_op_name: name of an op that needs no observation.
        compute_dtype: deprecated; any value means ``is_dynamic=True``.
        quant_min, quant_max, qscheme, eps: passed on.
        is_dynamic: whether the quantize op uses dynamic quantization.
    """

    def __init__(
        self,
        dtype: torch.dtype = torch.float32,
        custom_op_name: str = "",
        compute_dtype: torch.dtype | None = None,
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: torch.qscheme | None = None,
        eps: float | None = None,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        self.qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.eps = _EPS if eps is None else eps
        self.custom_op = custom_op_name
        if compute_dtype:
            warnings.warn(
                "Please use `is_dynamic` instead of `compute_dtype`. `compute_dtype` will be "
                "deprecated in a future release of PyTorch.",
                stacklevel=2,
            )

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}"


class RecordingObserver(_PassThroughObserver):
    """Records a copy of every tensor it sees (debugging).

    Args:
        dtype: quantized dtype passed on.
    """

    def __init__(self, dtype: torch.dtype = torch.quint8) -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.tensor_val: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tensor_val.append(x.clone())
        return x

    def get_tensor_value(self) -> list[torch.Tensor | None]:
        return self.tensor_val


class NoopObserver(_PassThroughObserver):
    """Carries its dtype (float16 by default) to the quantized module; observes nothing.

    Args:
        dtype: target dtype.
        custom_op_name: name of an op that needs no observation.
    """

    def __init__(self, dtype: torch.dtype = torch.float16, custom_op_name: str = "") -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.custom_op = custom_op_name


class ReuseInputObserver(_PassThroughObserver):
    """Marks an op (such as reshape) whose output reuses its input's observer (FX mode only)."""

    def __init__(self) -> None:
        super().__init__(torch.quint8, is_dynamic=False)


def _is_observer(module: torch.nn.Module) -> bool:
    if isinstance(module, ObserverBase):
        return True
    try:
        from torch.ao.quantization.fake_quantize import FakeQuantizeBase
        from torch.ao.quantization.observer import ObserverBase as TorchAOObserverBase
    except ImportError:
        return False
    return isinstance(module, (TorchAOObserverBase, FakeQuantizeBase))


def get_observer_state_dict(mod: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The observer entries (keys containing ``activation_post_process``) of ``mod``'s state_dict."""
    state = mod.state_dict()
    observed: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v) for k, v in state.items() if "activation_post_process" in k
    )
    observed._metadata = state._metadata  # type: ignore[attr-defined]
    return observed


def load_observer_state_dict(mod: torch.nn.Module, obs_dict: dict[str, torch.Tensor]) -> None:
    """Load what :func:`get_observer_state_dict` saved into the observers of ``mod``.

    Raises:
        Exception: an observer key is missing from, or unexpected in, ``obs_dict`` (torch.ao's
            exception type).
    """
    missing_keys: list[str] = []
    unexpected_keys: list[str] = []
    for name, module in mod.named_modules():
        if _is_observer(module):
            module._load_from_state_dict(
                obs_dict, name + ".", {}, False, missing_keys, unexpected_keys, []
            )
    for what, keys in (("Missing", missing_keys), ("Unexpected", unexpected_keys)):
        for k in keys:
            if "observer" in k or "activation_post_process" in k:
                raise Exception(f"{what} keys for observer {k} in state_dict")  # noqa: TRY002


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_placeholder_observer = PlaceholderObserver
default_debug_observer = RecordingObserver
default_weight_observer = MinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
)
weight_observer_range_neg_127_to_127 = MinMaxObserver.with_args(
    dtype=torch.qint8,
    qscheme=torch.per_tensor_symmetric,
    quant_min=-127,
    quant_max=127,
    eps=2**-12,
)
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric
)
per_channel_weight_observer_range_neg_127_to_127 = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8,
    qscheme=torch.per_channel_symmetric,
    quant_min=-127,
    quant_max=127,
    eps=2**-12,
)
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
)
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.quint8, qscheme=torch.per_channel_affine_float_qparams, ch_axis=0
)
default_float_qparams_observer_4bit = PerChannelMinMaxObserver.with_args(
    dtype=torch.quint4x2, qscheme=torch.per_channel_affine_float_qparams, ch_axis=0
)
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=torch.quint8, quant_min=0, quant_max=255
)
default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255
)
default_symmetric_fixed_qparams_observer = default_fixed_qparams_range_neg1to1_observer
default_affine_fixed_qparams_observer = default_fixed_qparams_range_0to1_observer
default_reuse_input_observer = ReuseInputObserver
