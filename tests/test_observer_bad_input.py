"""Bad input: empty and non-finite batches, wrong dtypes, wrong axes, invalid constructor arguments,
and qparams before any data. torch.ao is the reference wherever it defines the behaviour; where
tritonobs deliberately differs (NaN/inf, dtype and axis errors) the test states the contract."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.ao.quantization.observer as ao

import tritonobs

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

PER_TENSOR = ["MinMaxObserver", "MovingAverageMinMaxObserver"]
PER_CHANNEL = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
MIN_MAX = PER_TENSOR + PER_CHANNEL
PASS_THROUGH = {
    "FixedQParamsObserver": {"scale": 0.5, "zero_point": 1},
    "PlaceholderObserver": {},
    "NoopObserver": {},
    "ReuseInputObserver": {},
}
INF = float("inf")
NAN = float("nan")


# Non-default settings, so that a channel axis other than 0 and a visible averaging are exercised.
SETTINGS = {
    "HistogramObserver": {"bins": 32},
    "MinMaxObserver": {},
    "MovingAverageMinMaxObserver": {"averaging_constant": 0.5},
    "PerChannelMinMaxObserver": {"ch_axis": 1},
    "MovingAveragePerChannelMinMaxObserver": {"ch_axis": 1, "averaging_constant": 0.5},
}


def _make(module, name: str, **extra):
    return getattr(module, name)(**{**SETTINGS[name], **extra})


def _snapshot(obs: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in obs.state_dict().items()} | {
        "nonfinite_count": obs.nonfinite_count.clone()
    }


def _assert_state(obs: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    actual = _snapshot(obs)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert (actual[key].dtype, actual[key].shape) == (value.dtype, value.shape), key
        torch.testing.assert_close(actual[key], value, atol=0, rtol=0, msg=key)


def _assert_same_as_reference(ours, reference) -> None:
    for key, value in reference.state_dict().items():
        actual = ours.state_dict()[key]
        assert (actual.dtype, actual.shape) == (value.dtype, value.shape), key
        torch.testing.assert_close(actual, value, atol=0, rtol=0, msg=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for actual, expected in zip(
            ours.calculate_qparams(), reference.calculate_qparams(), strict=True
        ):
            assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
            torch.testing.assert_close(actual, expected, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# Empty batches


EMPTY_SHAPES = [(0,), (0, 3), (3, 0, 2)]


@pytest.mark.parametrize("name", [*MIN_MAX, "HistogramObserver"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize(
    "observed_before",
    [pytest.param(False, marks=pytest.mark.fallback("an empty batch launches nothing")), True],
)
def test_empty_batch_is_returned_and_changes_nothing(backend, name, shape, observed_before):
    ours = _make(tritonobs, name)
    if observed_before:
        ours(torch.randn(2, 3, 2))
    before = _snapshot(ours)
    x = torch.empty(shape)
    assert ours(x) is x
    _assert_state(ours, before)


@pytest.mark.parametrize("name", list(PASS_THROUGH))
def test_pass_through_observers_return_their_input(name):
    obs = getattr(tritonobs, name)(**PASS_THROUGH[name])
    for x in (torch.empty(0), torch.randn(2, 3), torch.tensor([NAN, INF])):
        assert obs(x) is x


# ---------------------------------------------------------------------------------------------
# NaN and +-inf


def _with_non_finite(finite: torch.Tensor, axis: int, seed: int) -> torch.Tensor:
    """``finite`` with a slab of NaN/+inf/-inf added along ``axis`` (a non-channel axis) and
    the positions along that axis shuffled: every channel gets non-finite values mixed with its
    finite ones, and the finite values of each channel are exactly those of ``finite``."""
    generator = torch.Generator().manual_seed(seed)
    shape = list(finite.shape)
    shape[axis] = 3
    choice = torch.randint(0, 3, shape, generator=generator)
    slab = torch.tensor([NAN, INF, -INF])[choice].to(finite.dtype)
    x = torch.cat([finite, slab], dim=axis)
    order = torch.randperm(x.shape[axis], generator=generator)
    return x.index_select(axis, order)


@pytest.mark.parametrize("name", MIN_MAX)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_non_finite_values_never_reach_min_max(backend, name, input_dtype):
    """State equals torch.ao's fed only the finite values; nonfinite_count counts the others."""
    reference = _make(ao, name)
    ours = _make(tritonobs, name)
    generator = torch.Generator().manual_seed(0)
    expected_count = 0
    for step in range(4):
        finite = (torch.randn(3, 4, 5, generator=generator) * (step + 1) + step).to(input_dtype)
        x = _with_non_finite(finite, axis=2 if step % 2 else 0, seed=step)
        expected_count += int((~torch.isfinite(x)).sum())
        reference(finite)
        assert ours(x) is x
        _assert_same_as_reference(ours, reference)
        assert ours.nonfinite_count.item() == expected_count


@pytest.mark.parametrize("name", PER_TENSOR)
def test_per_tensor_non_finite_positions_anywhere(backend, name):
    """Per tensor, the reference is torch.ao fed the finite values alone (a flat tensor)."""
    reference = _make(ao, name)
    ours = _make(tritonobs, name)
    generator = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(7, 9, generator=generator) + step
        x[torch.rand(7, 9, generator=generator) < 0.3] = NAN
        x[0, step] = INF
        x[step, 0] = -INF
        x = x.t()
        reference(x[torch.isfinite(x)])
        ours(x)
        _assert_same_as_reference(ours, reference)


def test_histogram_non_finite_values_are_skipped(backend):
    """HistogramObserver: state equals the same observer fed only the finite values."""
    ours, finite_only = _make(tritonobs, "HistogramObserver"), _make(tritonobs, "HistogramObserver")
    generator = torch.Generator().manual_seed(2)
    expected_count = 0
    for step in range(3):
        finite = torch.randn(4, 9, generator=generator) * (step + 1)
        x = _with_non_finite(finite, axis=1, seed=step)
        expected_count += int((~torch.isfinite(x)).sum())
        finite_only(finite)
        assert ours(x) is x
        _assert_state_dict(
            _snapshot(ours) | {"nonfinite_count": torch.tensor(0)}, _snapshot(finite_only)
        )
        assert ours.nonfinite_count.item() == expected_count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for actual, expected in zip(
            ours.calculate_qparams(), finite_only.calculate_qparams(), strict=True
        ):
            torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def test_float64_beyond_float32_counts_as_non_finite(backend):
    """Values are compared in float32 (as torch.ao does): a float64 1e300 becomes inf there."""
    ours = tritonobs.MinMaxObserver()
    reference = ao.MinMaxObserver()
    x = torch.tensor([1e300, -2.0, 3.0, -1e300], dtype=torch.float64)
    ours(x)
    reference(x[1:3])
    _assert_same_as_reference(ours, reference)
    assert ours.nonfinite_count.item() == 2


@pytest.mark.parametrize("name", ["MinMaxObserver", "PerChannelMinMaxObserver"])
def test_float64_buffers_hold_float32_statistics(backend, name):
    """Deliberate difference: statistics are computed in float32 whatever the buffers' dtype
    (factory_kwargs), so float64 buffers hold what torch.ao computes from float32-rounded input."""
    factory_kwargs = {"dtype": torch.float64}
    ours = _make(tritonobs, name, factory_kwargs=factory_kwargs)
    reference = _make(ao, name, factory_kwargs=factory_kwargs)
    generator = torch.Generator().manual_seed(4)
    for step in range(3):
        x = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator) * (step + 1)
        ours(x)
        reference(x.float().double())
        _assert_same_as_reference(ours, reference)
    assert ours.min_val.dtype == torch.float64


@pytest.mark.parametrize("name", [*MIN_MAX, "HistogramObserver"])
@pytest.mark.parametrize("observed_before", [False, True])
def test_all_non_finite_batch_leaves_state_unchanged(backend, name, observed_before):
    ours = _make(tritonobs, name)
    if observed_before:
        ours(torch.randn(2, 3, 4))
    before = _snapshot(ours)
    x = torch.tensor([NAN, INF, -INF, NAN, NAN, INF]).reshape(2, 3, 1).expand(2, 3, 4)
    assert ours(x) is x
    after = _snapshot(ours)
    assert after.pop("nonfinite_count").item() == before.pop("nonfinite_count").item() + 24
    if observed_before or name not in PER_CHANNEL:
        _assert_state_dict(after, before)
    else:
        # A per-channel observer cannot keep its [0] buffers without a host sync: it holds [C]
        # buffers at their initial (+inf, -inf), which calculate_qparams reads as "no data".
        assert torch.equal(after["min_val"], torch.full((3,), INF))
        assert torch.equal(after["max_val"], torch.full((3,), -INF))
    if not observed_before:
        _assert_qparams_before_data(ours, _make(ao, name))


def _assert_state_dict(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, atol=0, rtol=0, msg=key)


def _assert_qparams_before_data(ours, reference) -> None:
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        expected = reference.calculate_qparams()
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        actual = ours.calculate_qparams()
    for a, e in zip(actual, expected, strict=True):
        assert (a.dtype, a.shape) == (e.dtype, e.shape)
        torch.testing.assert_close(a, e, atol=0, rtol=0)


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_channel_without_finite_values_is_a_clear_error(backend, name):
    """A channel that has seen only NaN/inf has no range: calculate_qparams says which."""
    ours = _make(tritonobs, name)
    x = torch.randn(2, 3, 4)
    x[:, 1] = NAN
    ours(x)
    with pytest.raises(AssertionError, match=r"channel.*\[1\].*no finite value"):
        ours.calculate_qparams()


# ---------------------------------------------------------------------------------------------
# Wrong input dtype


BAD_INPUT_DTYPES = [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool]
BAD_INPUT_DTYPES += [torch.complex64, torch.complex128]


@pytest.mark.parametrize("name", [*MIN_MAX, "HistogramObserver"])
@pytest.mark.parametrize("dtype", BAD_INPUT_DTYPES, ids=str)
def test_non_float_input_is_a_type_error_naming_class_and_dtype(name, dtype):
    ours = getattr(tritonobs, name)()
    before = _snapshot(ours)
    x = torch.ones(2, 3).to(dtype)
    with pytest.raises(TypeError, match=rf"{name}.*{dtype}"):
        ours(x)
    _assert_state(ours, before)


@pytest.mark.parametrize("name", MIN_MAX)
def test_non_tensor_input_is_a_type_error(name):
    with pytest.raises(TypeError, match=rf"{name}.*list"):
        getattr(tritonobs, name)()([1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Channel axis and channel count


@pytest.mark.parametrize("name", PER_CHANNEL)
@pytest.mark.parametrize(
    ("ch_axis", "shape"), [(2, (3, 4)), (-3, (3, 4)), (5, (2, 3, 4)), (0, ()), (-1, ())]
)
@pytest.mark.fallback("the axis is checked before any launch")
def test_ch_axis_out_of_range_is_a_value_error(backend, name, ch_axis, shape):
    ours = _make(tritonobs, name, ch_axis=ch_axis)
    before = _snapshot(ours)
    with pytest.raises(ValueError, match=rf"{name}.*ch_axis={ch_axis}.*out of range.*{len(shape)}"):
        ours(torch.ones(shape))
    _assert_state(ours, before)
    # torch.ao fails too, with an IndexError from its permutation list.
    with pytest.raises(IndexError):
        _make(ao, name, ch_axis=ch_axis)(torch.ones(shape))


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_channel_count_change_is_a_value_error(backend, name):
    ours = _make(tritonobs, name)
    ours(torch.randn(2, 3, 4))
    before = _snapshot(ours)
    with pytest.raises(ValueError, match=rf"{name}.*3 channels.*axis 1.*5"):
        ours(torch.randn(2, 5, 4))
    _assert_state(ours, before)
    # The other axes may change size.
    reference = _make(ao, name)
    reference(torch.randn(2, 3, 4))
    reference.load_state_dict(ours.state_dict())
    y = torch.randn(7, 3, 1)
    reference(y)
    ours(y)
    _assert_same_as_reference(ours, reference)


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_one_dimensional_batch_is_one_value_per_channel(backend, name):
    """Deliberate difference: torch.ao's per-channel observers raise on a 1-d batch (flatten of
    dim 1); tritonobs treats each element as its own channel."""
    with pytest.raises(IndexError):
        _make(ao, name, ch_axis=0)(torch.randn(5))
    ours = _make(tritonobs, name, ch_axis=0)
    x = torch.randn(5)
    ours(x)
    assert torch.equal(ours.min_val, x) and torch.equal(ours.max_val, x)


# ---------------------------------------------------------------------------------------------
# Invalid constructor arguments: the same exception type as torch.ao


INVALID_CONSTRUCTIONS = [
    ("MinMaxObserver", {"qscheme": torch.per_channel_affine}),
    ("MinMaxObserver", {"qscheme": torch.per_channel_affine_float_qparams}),
    ("MinMaxObserver", {"qscheme": "affine"}),
    ("MovingAverageMinMaxObserver", {"qscheme": torch.per_channel_symmetric}),
    ("PerChannelMinMaxObserver", {"qscheme": torch.per_tensor_affine}),
    ("MovingAveragePerChannelMinMaxObserver", {"qscheme": torch.per_tensor_symmetric}),
    ("HistogramObserver", {"qscheme": torch.per_channel_affine}),
    ("MinMaxObserver", {"dtype": torch.float32}),
    ("PerChannelMinMaxObserver", {"dtype": torch.int64}),
    ("MovingAverageMinMaxObserver", {"dtype": torch.bool}),
    ("HistogramObserver", {"dtype": torch.float16}),
    ("MinMaxObserver", {"quant_min": 1, "quant_max": 10}),
    ("PerChannelMinMaxObserver", {"quant_min": -10, "quant_max": -1}),
    ("MovingAverageMinMaxObserver", {"quant_min": 0, "quant_max": 0}),
    ("MinMaxObserver", {"dtype": torch.qint8, "quant_min": -200, "quant_max": 100}),
    ("MinMaxObserver", {"dtype": torch.qint32, "quant_min": -(2**32), "quant_max": 2**32}),
    ("MinMaxObserver", {"qscheme": torch.per_tensor_symmetric, "reduce_range": True}),
    ("PerChannelMinMaxObserver", {"qscheme": torch.per_channel_symmetric, "reduce_range": True}),
    ("MovingAverageMinMaxObserver", {"is_dynamic": True}),
    ("PerChannelMinMaxObserver", {"is_dynamic": True}),
    ("MovingAveragePerChannelMinMaxObserver", {"is_dynamic": True}),
    ("HistogramObserver", {"is_dynamic": True}),
    ("FixedQParamsObserver", {"scale": 0.1, "zero_point": 0, "is_dynamic": True}),
    ("MinMaxObserver", {"unknown_argument": 1}),
    ("PerChannelMinMaxObserver", {"eps": "tiny"}),
]
VALID_EDGE_CONSTRUCTIONS = [
    ("MinMaxObserver", {"is_dynamic": True}),
    ("MovingAverageMinMaxObserver", {"is_dynamic": True, "averaging_constant": 1}),
    ("MinMaxObserver", {"quant_min": -5}),
    ("MinMaxObserver", {"dtype": torch.float8_e4m3fn}),
    ("PerChannelMinMaxObserver", {"dtype": torch.uint16, "qscheme": torch.per_channel_symmetric}),
    ("HistogramObserver", {"dtype": torch.qint8, "quant_min": -127, "quant_max": 127}),
]


def _raised(module, name: str, kwargs: dict) -> type[BaseException] | None:
    try:
        getattr(module, name)(**kwargs)
    except Exception as error:  # noqa: BLE001  (the type is what is compared)
        return type(error)
    return None


@pytest.mark.parametrize(("name", "kwargs"), INVALID_CONSTRUCTIONS, ids=str)
def test_invalid_constructor_arguments_raise_like_torch_ao(name, kwargs):
    expected = _raised(ao, name, kwargs)
    assert expected is not None
    assert _raised(tritonobs, name, kwargs) is expected


@pytest.mark.parametrize(("name", "kwargs"), VALID_EDGE_CONSTRUCTIONS, ids=str)
def test_edge_constructor_arguments_accepted_like_torch_ao(name, kwargs):
    assert _raised(ao, name, kwargs) is None
    reference, ours = getattr(ao, name)(**kwargs), getattr(tritonobs, name)(**kwargs)
    assert (ours.quant_min, ours.quant_max) == (reference.quant_min, reference.quant_max)


# ---------------------------------------------------------------------------------------------
# calculate_qparams before any data


@pytest.mark.parametrize("name", [*MIN_MAX, "HistogramObserver"])
def test_qparams_before_data_warn_and_default_like_torch_ao(name):
    _assert_qparams_before_data(getattr(tritonobs, name)(), getattr(ao, name)())


@pytest.mark.parametrize("name", MIN_MAX)
def test_qparams_after_reset_warn_and_default_like_torch_ao(backend, name):
    reference, ours = _make(ao, name), _make(tritonobs, name)
    for obs in (reference, ours):
        obs(torch.randn(2, 3))
        obs.reset_min_max_vals()
    _assert_qparams_before_data(ours, reference)


@pytest.mark.parametrize("bins", [0, -3])
def test_histogram_observer_rejects_bins_below_one_at_construction(bins):
    """torch.ao raises RuntimeError for these (at construction for bins < 0, at the first forward
    for bins == 0); tritonobs raises it at construction, with the reason."""
    with pytest.raises(RuntimeError):
        ao.HistogramObserver(bins=bins)(torch.randn(10))
    with pytest.raises(RuntimeError, match="bins must be > 0"):
        tritonobs.HistogramObserver(bins=bins)
