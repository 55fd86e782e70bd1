"""Scale and zero point from min/max: the arithmetic of torch.ao's observers, as pure functions."""

from __future__ import annotations

import warnings

import torch

PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL_QSCHEMES = (
    torch.per_channel_affine,
    torch.per_channel_symmetric,
    torch.per_channel_affine_float_qparams,
)
SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)

UNINITIALISED_WARNING = (
    "must run observer before calling calculate_qparams. Returning default values."
)


def calculate_qmin_qmax(
    quant_min: int | None,
    quant_max: int | None,
    has_customized_qrange: bool,
    dtype: torch.dtype,
    reduce_range: bool,
) -> tuple[int, int]:
    """The quantized range an observer uses, as torch.ao derives it from its arguments."""
    if has_customized_qrange:
        assert quant_min is not None and quant_max is not None
        span = quant_max - quant_min + 1
        if dtype in (torch.qint8, torch.int8) and not 0 < span <= 256:
            raise AssertionError(
                "quantization range should be positive and not exceed the maximum bit range (=256)."
            )
        if dtype in (torch.qint32, torch.int32) and not 0 < span <= 2**32:
            raise AssertionError(
                "quantization range should be positive and not exceed the maximum bit range (=4294967296)."
            )
        if reduce_range:
            return quant_min // 2, quant_max // 2
        return quant_min, quant_max
    if dtype in (torch.qint8, torch.int8):
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype in (torch.quint8, torch.uint8):
        return (0, 127) if reduce_range else (0, 255)
    if dtype in (torch.qint32, torch.int32):
        return -(2**31), 2**31 - 1
    if dtype == torch.uint16:
        return 0, 2**16 - 1
    if dtype == torch.int16:
        return -(2**15), 2**15 - 1
    return 0, 15


def validate_qmin_qmax(quant_min: int, quant_max: int) -> None:
    """A user-given quantized range must contain 0 and be non-empty (``AssertionError`` otherwise)."""
    if not quant_min <= 0 <= quant_max:
        raise AssertionError("Used-specified quantization range must include 0.")
    if quant_min >= quant_max:
        raise AssertionError(
            "qmin must be strictly less than qmax for user-specified quantization range."
        )


def min_max_valid(min_val: torch.Tensor, max_val: torch.Tensor) -> bool:
    """Whether min/max hold data; warns (as torch.ao does) when they do not. Synchronizes.

    Per channel, a channel still at its initial ``(+inf, -inf)`` has seen no finite value (its
    batches held only NaN/inf, which tritonobs skips). When every channel is in that state the
    observer has no data: the warning and ``False``, as for torch.ao's ``[0]``-shaped buffers.
    When only some are, there is no range for them: ``AssertionError`` naming them (torch.ao
    raises the same type for ``min > max``).

    Args:
        min_val: running minimum, 0-d, ``[C]`` or ``[0]``.
        max_val: running maximum, same shape.

    Returns:
        ``True`` when qparams can be computed, ``False`` (after the warning) when no data was
        observed.
    """
    if min_val.numel() == 0 or max_val.numel() == 0:
        warnings.warn(UNINITIALISED_WARNING, stacklevel=3)
        return False
    if min_val.dim() == 0 or max_val.dim() == 0:
        if min_val == float("inf") and max_val == float("-inf"):
            warnings.warn(UNINITIALISED_WARNING, stacklevel=3)
            return False
        if min_val > max_val:
            raise AssertionError(f"min {min_val} should be less than max {max_val}")
        return True
    unobserved = (min_val == float("inf")) & (max_val == float("-inf"))
    if bool(unobserved.all()):
        warnings.warn(UNINITIALISED_WARNING, stacklevel=3)
        return False
    if bool(unobserved.any()):
        channels = unobserved.nonzero().flatten().tolist()
        raise AssertionError(
            f"channels {channels} have seen no finite value (min=+inf, max=-inf): "
            "no range to quantize them with"
        )
    if torch.any(min_val > max_val):
        raise AssertionError(f"min {min_val} should be less than max {max_val}")
    return True


def calculate_qparams(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    *,
    quant_min: int,
    quant_max: int,
    qscheme: torch.qscheme,
    dtype: torch.dtype,
    eps: torch.Tensor,
    has_customized_qrange: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for ``[min_val, max_val]``, per tensor (0-d) or per channel (``[C]``).

    The same operations, in the same order and dtypes, as torch.ao's
    ``UniformQuantizationObserverBase._calculate_qparams``, so results are bit-identical:

    * symmetric: ``scale = max(max(-min(min, 0), max(max, 0)) / ((qmax - qmin) / 2), eps)``,
      zero point 0 (128 for unsigned 8-bit, the range midpoint for a custom unsigned range,
      2^15 for uint16);
    * float qparams: ``scale = (max - min) / (qmax - qmin)`` (1 where not above eps),
      ``zero_point = -min / scale`` in float;
    * affine: ``scale = max((max(max, 0) - min(min, 0)) / (qmax - qmin), eps)``,
      ``zero_point = clamp(qmin - round(min(min, 0) / scale), qmin, qmax)``.

    Returns the defaults ``([1.0], [0])`` with a warning when no data was observed. Synchronizes
    (the validity check reads values on the host).
    """
    if not min_max_valid(min_val, max_val):
        device = min_val.device.type
        return torch.tensor([1.0], device=device), torch.tensor([0], device=device)

    min_val_neg = torch.min(min_val, torch.zeros_like(min_val))
    max_val_pos = torch.max(max_val, torch.zeros_like(max_val))
    device = min_val_neg.device
    zero_point = torch.zeros(min_val_neg.size(), dtype=torch.int64, device=device)

    if qscheme in SYMMETRIC_QSCHEMES:
        max_val_pos = torch.max(-min_val_neg, max_val_pos)
        scale = max_val_pos / (float(quant_max - quant_min) / 2)
        scale = torch.max(scale, eps)
        if dtype in (torch.quint8, torch.uint8):
            midpoint = (quant_min + quant_max) // 2 if has_customized_qrange else 128
            zero_point = zero_point.new_full(zero_point.size(), midpoint)
        elif dtype == torch.uint16:
            zero_point = zero_point.new_full(zero_point.size(), 2**15)
    elif qscheme == torch.per_channel_affine_float_qparams:
        scale = (max_val - min_val) / float(quant_max - quant_min)
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
        zero_point = -1 * min_val / scale
    else:
        scale = (max_val_pos - min_val_neg) / float(quant_max - quant_min)
        scale = torch.max(scale, eps)
        zero_point = quant_min - torch.round(min_val_neg / scale).to(torch.int)
        zero_point = torch.clamp(zero_point, quant_min, quant_max)

    # Per tensor, scale is already [1] (broadcast with eps); the symmetric zero point is 0-d.
    if zero_point.dim() == 0:
        zero_point = zero_point.reshape(1)
    return scale, zero_point
