"""tritonobs.qparams against torch.ao's arithmetic: quantized ranges and scale/zero point."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.ao.quantization.observer as ao
from torch.ao.quantization import utils as ao_utils

from tritonobs._base import ALLOWED_DTYPES
from tritonobs.qparams import (
    PER_CHANNEL_QSCHEMES,
    PER_TENSOR_QSCHEMES,
    calculate_qmin_qmax,
    calculate_qparams,
    validate_qmin_qmax,
)

CUSTOM_RANGES = [(0, 255), (-128, 127), (-127, 127), (0, 15), (-8, 7), (-200, 100), (0, 300)]
CUSTOM_RANGES += [(-(2**31), 2**31 - 1), (-(2**31), 2**31), (0, 1)]


def _outcome(fn, *args):
    """``("ok", result)`` or ``("raises", exception type)``."""
    try:
        return "ok", fn(*args)
    except Exception as error:  # noqa: BLE001  (the type is what is compared)
        return "raises", type(error)


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES, ids=str)
@pytest.mark.parametrize("reduce_range", [False, True])
def test_calculate_qmin_qmax_equals_torch_ao(dtype, reduce_range):
    cases = [(None, None, False)] + [(lo, hi, True) for lo, hi in CUSTOM_RANGES]
    for quant_min, quant_max, custom in cases:
        args = (quant_min, quant_max, custom, dtype, reduce_range)
        assert _outcome(calculate_qmin_qmax, *args) == _outcome(
            ao_utils.calculate_qmin_qmax, *args
        ), args


@pytest.mark.parametrize(
    ("quant_min", "quant_max"), [(0, 255), (-5, 5), (1, 10), (-10, -1), (0, 0), (3, 3), (5, -5)]
)
def test_validate_qmin_qmax_equals_torch_ao(quant_min, quant_max):
    assert _outcome(validate_qmin_qmax, quant_min, quant_max) == _outcome(
        ao_utils.validate_qmin_qmax, quant_min, quant_max
    )


_TINY = 1e-40  # a float32 denormal: the scale falls below eps
_HUGE = 3e38  # close to the float32 maximum: max - min overflows to inf
MIN_MAX_PAIRS = [
    (-1.0, 1.0),
    (0.0, 0.0),
    (5.0, 5.0),
    (-3.0, -3.0),
    (0.5, 2.0),
    (-7.25, -0.125),
    (-_TINY, _TINY),
    (-_HUGE, _HUGE),
    (-1e-3, 1e6),
    (-0.0, 0.0),
    (-123.456, 0.001),
]

QRANGES = [None, (0, 127), (-127, 127), (-3, 12)]


def _configs():
    for dtype, qscheme, reduce_range, qrange in itertools.product(
        [torch.quint8, torch.qint8, torch.quint4x2, torch.qint32, torch.int16, torch.uint16],
        PER_TENSOR_QSCHEMES + PER_CHANNEL_QSCHEMES,
        [False, True],
        QRANGES,
    ):
        if qrange is not None and qrange[0] < 0 and dtype in (torch.quint8, torch.uint16):
            continue
        yield dtype, qscheme, reduce_range, qrange


def _reference(dtype, qscheme, reduce_range, qrange):
    """A torch.ao observer configured as asked, or ``None`` when torch.ao refuses the config."""
    cls = ao.PerChannelMinMaxObserver if qscheme in PER_CHANNEL_QSCHEMES else ao.MinMaxObserver
    kwargs = {"dtype": dtype, "qscheme": qscheme, "reduce_range": reduce_range}
    if qrange is not None:
        kwargs["quant_min"], kwargs["quant_max"] = qrange
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**kwargs)
    except (NotImplementedError, AssertionError):
        return None


def _ours(reference, min_val, max_val):
    return calculate_qparams(
        min_val,
        max_val,
        quant_min=reference.quant_min,
        quant_max=reference.quant_max,
        qscheme=reference.qscheme,
        dtype=reference.dtype,
        eps=reference.eps,
        has_customized_qrange=reference.has_customized_qrange,
    )


def _assert_identical(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        assert (a.dtype, a.shape) == (e.dtype, e.shape)
        torch.testing.assert_close(a, e, atol=0, rtol=0, equal_nan=True)


# The configs torch.ao accepts (its refusals are compared in test_observer_bad_input.py).
ACCEPTED = [config for config in _configs() if _reference(*config) is not None]


@pytest.mark.parametrize("config", ACCEPTED, ids=str)
def test_calculate_qparams_equals_torch_ao(config):
    reference = _reference(*config)
    per_channel = config[1] in PER_CHANNEL_QSCHEMES
    if per_channel:
        min_val = torch.tensor([p[0] for p in MIN_MAX_PAIRS])
        max_val = torch.tensor([p[1] for p in MIN_MAX_PAIRS])
        _assert_identical(
            _ours(reference, min_val, max_val), reference._calculate_qparams(min_val, max_val)
        )
        return
    for lo, hi in MIN_MAX_PAIRS:
        min_val, max_val = torch.tensor(lo), torch.tensor(hi)
        _assert_identical(
            _ours(reference, min_val, max_val), reference._calculate_qparams(min_val, max_val)
        )


@pytest.mark.parametrize(
    ("min_val", "max_val"),
    [
        (torch.tensor(float("inf")), torch.tensor(float("-inf"))),
        (torch.tensor([]), torch.tensor([])),
    ],
    ids=["per_tensor", "per_channel"],
)
def test_uninitialised_warns_and_returns_defaults_like_torch_ao(min_val, max_val):
    reference = ao.MinMaxObserver()
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        expected = reference._calculate_qparams(min_val, max_val)
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        actual = _ours(reference, min_val, max_val)
    _assert_identical(actual, expected)


@pytest.mark.parametrize(
    ("min_val", "max_val"),
    [(torch.tensor(2.0), torch.tensor(1.0)), (torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0]))],
)
def test_min_above_max_raises_like_torch_ao(min_val, max_val):
    reference = ao.PerChannelMinMaxObserver() if min_val.dim() else ao.MinMaxObserver()
    with pytest.raises(AssertionError, match="should be less than max"):
        reference._calculate_qparams(min_val, max_val)
    with pytest.raises(AssertionError, match="should be less than max"):
        _ours(reference, min_val, max_val)
