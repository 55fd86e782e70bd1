"""HistogramObserver: running histogram of the finite values, L2-optimal range search for qparams."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from tritonobs._base import FLOAT_INPUT_DTYPES, UniformQuantizationObserverBase, detached
from tritonobs.ops.histogram_search import histogram_search
from tritonobs.ops.histogram_update import histogram_update
from tritonobs.qparams import PER_TENSOR_QSCHEMES

_EPS = torch.finfo(torch.float32).eps


class HistogramObserver(UniformQuantizationObserverBase):
    r"""Running histogram of tensor values with its min/max, as torch.ao's ``HistogramObserver``.

    Forward folds each batch into ``histogram`` (``bins`` float32 counts over
    ``[min_val, max_val]``), re-binning the running histogram on the device when the range grows.
    ``calculate_qparams`` searches the histogram for the range that minimises the L2 quantization
    error (torch.ao's greedy search, vectorized) and computes scale and zero point from it.

    Args:
        bins: number of histogram bins.
        others: as :class:`UniformQuantizationObserverBase`; ``qscheme`` must be per tensor.
    """

    histogram: torch.Tensor
    min_val: torch.Tensor
    max_val: torch.Tensor
    nonfinite_count: torch.Tensor

    def __init__(
        self,
        bins: int = 2048,
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
                "HistogramObserver's qscheme only support torch.per_tensor_symmetric "
                f"and torch.per_tensor_affine; got {qscheme}"
            )
        if is_dynamic:
            raise NotImplementedError("HistogramObserver doesn't support dynamic quantization")
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
        if bins < 1:
            # torch.ao raises RuntimeError too: from torch.zeros at construction for bins < 0, from
            # torch.histogram at the first forward for bins == 0.
            raise RuntimeError(f"HistogramObserver: bins must be > 0, got {bins}")
        self.bins = bins
        self.register_buffer("histogram", torch.zeros(self.bins, **factory_kwargs))
        self.register_buffer("min_val", torch.tensor(float("inf"), **factory_kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **factory_kwargs))
        self.register_buffer(
            "nonfinite_count",
            torch.zeros((), dtype=torch.int64, device=factory_kwargs.get("device")),
            persistent=False,
        )
        self.dst_nbins = 2 ** torch.iinfo(self.dtype).bits
        # Re-binning spreads each old bin over this many points to limit the re-binning error.
        self.upsample_rate = 16

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Fold ``x_orig``'s finite values into the histogram, in place; returns ``x_orig``.

        One op, ``tritonobs::histogram_update``, that writes the buffers. No host sync on CUDA.
        """
        if not (isinstance(x_orig, torch.Tensor) and x_orig.dtype in FLOAT_INPUT_DTYPES):
            self._check_input(x_orig)  # raises the TypeError
        if x_orig.numel() == 0:
            return x_orig
        histogram_update(
            detached(x_orig),
            self.histogram,
            self.min_val,
            self.max_val,
            self.nonfinite_count,
            self.upsample_rate,
        )
        return x_orig

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Scale and zero point of the L2-optimal range. Synchronizes with the host."""
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            warnings.warn(
                "must run observer before calling calculate_qparams. "
                "Returning default scale and zero point ",
                stacklevel=2,
            )
            device = self.min_val.device.type
            return torch.tensor([1.0], device=device), torch.tensor([0], device=device)
        if self.bins != len(self.histogram):
            raise AssertionError(
                "The number of bins in histogram should be equal to the number of bins "
                "supplied while making this observer"
            )
        new_min, new_max = histogram_search(
            self.histogram, self.min_val, self.max_val, self.dst_nbins
        )
        return self._calculate_qparams(new_min, new_max)

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "min_val"] = self.min_val
        destination[prefix + "max_val"] = self.max_val

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
        if version is None or version < 3:
            # Version 2 stored an uninitialised min/max as shape [0].
            for name, initial in (("min_val", float("inf")), ("max_val", float("-inf"))):
                key = prefix + name
                if key in state_dict and state_dict[key].shape == torch.Size([0]):
                    state_dict[key] = torch.tensor(initial)
        for name in ("min_val", "max_val"):
            key = prefix + name
            if key in state_dict:
                current, value = getattr(self, name), state_dict[key].detach()
                if value.shape == current.shape:
                    # In place: the buffer keeps its identity (a compiled forward holds it).
                    current.copy_(value)
                else:
                    # torch.ao replaces the buffer, so that the parent's loader sees its shape.
                    setattr(self, name, value.to(current.device, current.dtype).clone())
            elif strict:
                missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"
