"""Observer base classes: torch.ao's constructor contract, state_dict versions and input checks."""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from functools import partial
from typing import Any

import torch
from torch import nn

from tritonobs.qparams import (
    PER_CHANNEL_QSCHEMES,
    PER_TENSOR_QSCHEMES,
    calculate_qmin_qmax,
    calculate_qparams,
    validate_qmin_qmax,
)

FLOAT_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

ALLOWED_DTYPES = (
    torch.qint8,
    torch.quint8,
    torch.quint4x2,
    torch.qint32,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.float8_e5m2,
    torch.float8_e4m3fn,
    torch.uint16,
)


class _FallbackObserverBase(nn.Module, metaclass=ABCMeta):
    """Stands in for torch.ao's ``ObserverBase`` when torch.ao.quantization is missing."""

    def __init__(self, dtype: Any, is_dynamic: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = is_dynamic


class _FallbackPartialWrapper:
    """A factory with bound keyword arguments; ``callable_args`` are called at each construction.

    Used only when torch.ao.quantization is missing; otherwise torch.ao's own class is used, so
    that its QConfig comparisons (``isinstance(..., _PartialWrapper)``) see tritonobs factories.
    """

    def __init__(self, p: partial) -> None:
        self.p = p
        self.callable_args: dict[str, Any] = {}

    def __call__(self, *args: Any, **keywords: Any) -> Any:
        for name, make in self.callable_args.items():
            if name not in keywords:
                keywords[name] = make()
        return self.p(*args, **keywords)

    def __repr__(self) -> str:
        return repr(self.p) + repr(self.callable_args)

    def with_args(self, **kwargs: Any) -> _FallbackPartialWrapper:
        return _fallback_with_args(self, **kwargs)

    def with_callable_args(self, **kwargs: Any) -> _FallbackPartialWrapper:
        result = _FallbackPartialWrapper(p=self.p)
        result.callable_args = {**self.callable_args, **kwargs}
        return result


def _fallback_with_args(cls_or_self: Any, **kwargs: Any) -> _FallbackPartialWrapper:
    """A factory of ``cls_or_self`` with ``kwargs`` bound: each call builds a new instance."""
    return _FallbackPartialWrapper(partial(cls_or_self, **kwargs))


def _fallback_with_callable_args(cls_or_self: Any, **kwargs: Any) -> _FallbackPartialWrapper:
    """A factory whose ``kwargs`` are callables evaluated at each construction."""
    return _FallbackPartialWrapper(partial(cls_or_self)).with_callable_args(**kwargs)


try:
    from torch.ao.quantization.observer import ObserverBase as _TorchAOObserverBase
    from torch.ao.quantization.observer import _PartialWrapper, _with_args, _with_callable_args
except ImportError:  # torch.ao.quantization is deprecated upstream and may go away
    _TorchAOObserverBase = _FallbackObserverBase  # type: ignore[misc,assignment]
    _PartialWrapper = _FallbackPartialWrapper  # type: ignore[misc,assignment]
    _with_args = _fallback_with_args  # type: ignore[assignment]
    _with_callable_args = _fallback_with_callable_args  # type: ignore[assignment]


def detached(x: torch.Tensor) -> torch.Tensor:
    """``x`` cut from autograd, without a new tensor when it is not part of a graph (``detach``
    costs as much as the rest of a tiny forward's host work)."""
    return x.detach() if x.requires_grad else x


class ObserverBase(_TorchAOObserverBase):
    """Base of every tritonobs observer; an instance of torch.ao's ``ObserverBase`` when it exists.

    Args:
        dtype: the quantized dtype the observed tensor will be converted to.
        is_dynamic: whether the observer stands for dynamic quantization.
    """

    def __init__(self, dtype: Any, is_dynamic: bool = False) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)

    @abstractmethod
    def forward(self, x: Any) -> Any: ...

    @abstractmethod
    def calculate_qparams(self, **kwargs: Any) -> Any: ...

    with_args = classmethod(_with_args)
    with_callable_args = classmethod(_with_callable_args)

    def _check_input(self, x: torch.Tensor) -> None:
        """``TypeError`` unless ``x`` is a floating-point tensor (dtype is static under compile)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} observes tensors, got {type(x).__name__}")
        if x.dtype not in FLOAT_INPUT_DTYPES:
            raise TypeError(
                f"{type(self).__name__} observes floating-point tensors "
                f"(float16, bfloat16, float32, float64); got dtype {x.dtype}"
            )


class UniformQuantizationObserverBase(ObserverBase):
    """Common base of the observers that compute an affine or symmetric scale and zero point.

    Same arguments, defaults, buffers and errors as torch.ao's class of that name.

    Args:
        dtype: quantized dtype (``torch.quint8``, ``torch.qint8``, ``torch.int8``, ...).
        qscheme: one of the per-tensor or per-channel ``torch.qscheme`` values.
        reduce_range: halve the quantized range (deprecated upstream; prefer quant_min/quant_max).
        quant_min: lower end of a custom quantized range (with quant_max).
        quant_max: upper end of a custom quantized range (with quant_min).
        factory_kwargs: ``device``/``dtype`` for the buffers.
        eps: smallest scale, float32 epsilon by default.
        is_dynamic: whether the observer stands for dynamic quantization.
    """

    # Version 2 added the eps buffer; version 3 changed the uninitialised Histogram min/max shape
    # and the per-channel buffer names (min_vals -> min_val).
    _version = 3

    eps: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        super().__init__(dtype=dtype, is_dynamic=is_dynamic, **kwargs)
        self.qscheme = qscheme
        if reduce_range:
            warnings.warn(
                "Please use quant_min and quant_max to specify the range for observers. "
                "reduce_range will be deprecated in a future release of PyTorch.",
                stacklevel=2,
            )
        self.reduce_range = reduce_range
        self.register_buffer("eps", torch.tensor([eps], **factory_kwargs))
        if self.qscheme not in PER_TENSOR_QSCHEMES + PER_CHANNEL_QSCHEMES:
            raise AssertionError(
                "Default Observer only works for per_tensor_affine, per_tensor_symmetric, "
                "per_channel_affine, per_channel_symmetric and per_channel_float_qparams "
                f"quantization scheme; got {qscheme}"
            )
        if self.dtype not in ALLOWED_DTYPES:
            raise AssertionError(
                f"Default Observer only works for {ALLOWED_DTYPES} data type; got {dtype}"
            )
        self.has_customized_qrange = (quant_min is not None) and (quant_max is not None)
        if self.has_customized_qrange:
            validate_qmin_qmax(quant_min, quant_max)  # type: ignore[arg-type]
        self.quant_min, self.quant_max = calculate_qmin_qmax(
            quant_min, quant_max, self.has_customized_qrange, self.dtype, self.reduce_range
        )

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
        version = local_metadata.get("version", None)
        if version is None or version == 1:
            state_dict[prefix + "eps"] = torch.tensor([torch.finfo(torch.float32).eps])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _validate_qmin_qmax(self, quant_min: int, quant_max: int) -> None:
        validate_qmin_qmax(quant_min, quant_max)

    def _calculate_qparams(
        self, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for the given min/max (see :func:`tritonobs.qparams.calculate_qparams`)."""
        return calculate_qparams(
            min_val,
            max_val,
            quant_min=self.quant_min,
            quant_max=self.quant_max,
            qscheme=self.qscheme,
            dtype=self.dtype,
            eps=self.eps,
            has_customized_qrange=self.has_customized_qrange,
        )

    def reset_min_max_vals(self) -> None:
        raise NotImplementedError("Cannot reset min/max values in the given observer.")
