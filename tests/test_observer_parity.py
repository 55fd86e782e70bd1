"""The min/max observers give torch.ao's numbers exactly: buffers, scale and zero point.

Every test feeds the same stream of batches to a tritonobs observer and to the installed torch.ao
one and compares ``min_val``, ``max_val``, scale and zero point after each batch with
``atol=0, rtol=0`` (same dtype and shape too). Each runs twice through the ``backend`` fixture:
torch reference ops, and Triton kernels under the interpreter.

The configuration space (dtype x qscheme x reduce_range x quant range x ch_axis x input dtype x
layout x averaging constant) is too big for its full product, so the streams cover every *pair* of
values of any two dimensions (greedy all-pairs over the configurations torch.ao accepts); the
configurations torch.ao refuses are compared over the full product of the constructor arguments.
"""

from __future__ import annotations

import itertools
import warnings
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.ao.quantization.observer as ao
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tritonobs
from tests.conftest import INPUT_DTYPES, SHAPES

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

PER_TENSOR = ["MinMaxObserver", "MovingAverageMinMaxObserver"]
PER_CHANNEL = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
CLASSES = PER_TENSOR + PER_CHANNEL

DTYPES = [
    torch.quint8,
    torch.qint8,
    torch.quint4x2,
    torch.qint32,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
]
# A custom quantized range per dtype, inside its bit range and containing 0.
CUSTOM_QRANGE = {
    torch.quint8: (0, 127),
    torch.qint8: (-127, 127),
    torch.quint4x2: (0, 7),
    torch.qint32: (-(2**20), 2**20 - 1),
    torch.int8: (-8, 7),
    torch.uint8: (0, 200),
    torch.int16: (-1000, 1000),
    torch.int32: (-(2**31), 2**31 - 1),
}
QSCHEMES = {
    "per_tensor": [torch.per_tensor_affine, torch.per_tensor_symmetric],
    "per_channel": [
        torch.per_channel_affine,
        torch.per_channel_symmetric,
        torch.per_channel_affine_float_qparams,
    ],
}
PARITY_INPUT_DTYPES = [*INPUT_DTYPES, torch.float64]
LAYOUTS = ["contiguous", "permuted", "sliced"]
AVERAGING_CONSTANTS = [0.01, 0.3, 1.0]
# Per-channel streams use 4-d batches so that every ch_axis, -4 to 3, is available.
CHANNEL_SHAPES = [(2, 3, 5, 7), (1, 6, 1, 11), (4, 1, 9, 2)]
# Offsets and spreads of the five batches: the range grows, shrinks, leaves zero and comes back.
STREAM = [(0.0, 1.0), (2.0, 0.1), (-3.0, 4.0), (10.0, 0.5), (0.5, 2.0)]


def _dimensions(name: str) -> dict[str, list]:
    per_channel = name in PER_CHANNEL
    dims: dict[str, list] = {
        "dtype": DTYPES,
        "qscheme": QSCHEMES["per_channel" if per_channel else "per_tensor"],
        "reduce_range": [False, True],
        "custom_qrange": [False, True],
        "input_dtype": PARITY_INPUT_DTYPES,
        "layout": LAYOUTS,
    }
    if per_channel:
        dims["ch_axis"] = [-4, -3, -2, -1, 0, 1, 2, 3]
        dims["shape"] = CHANNEL_SHAPES
    if name.startswith("MovingAverage"):
        dims["averaging_constant"] = AVERAGING_CONSTANTS
    return dims


def _constructor_kwargs(name: str, case: dict) -> dict:
    kwargs = {k: case[k] for k in ("dtype", "qscheme", "reduce_range")}
    if case["custom_qrange"]:
        kwargs["quant_min"], kwargs["quant_max"] = CUSTOM_QRANGE[case["dtype"]]
    for key in ("ch_axis", "averaging_constant"):
        if key in case:
            kwargs[key] = case[key]
    return kwargs


def _construct(module, name: str, kwargs: dict):
    """``(observer, None)``, or ``(None, exception type)`` when the constructor raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(module, name)(**kwargs), None
    except Exception as error:  # noqa: BLE001  (the type is what is compared)
        return None, type(error)


def all_pairs(dims: dict[str, list], valid, valid_keys: list[str]) -> list[dict]:
    """Configurations covering every pair of values of any two dimensions that some valid
    configuration holds (greedy set cover over the full product, deterministic).

    Args:
        dims: dimension name -> its values.
        valid: predicate on the ``valid_keys`` part of a configuration (a dict); configurations
            it refuses are never chosen.
        valid_keys: the dimensions ``valid`` looks at.

    Returns:
        The chosen configurations, in the order chosen.
    """
    names = list(dims)
    sizes = [len(dims[n]) for n in names]
    # Every configuration as a row of value indices.
    grid = np.stack(np.meshgrid(*(np.arange(k) for k in sizes), indexing="ij"), axis=-1)
    grid = grid.reshape(-1, len(names))
    key_columns = [names.index(k) for k in valid_keys]
    keys, inverse = np.unique(grid[:, key_columns], axis=0, return_inverse=True)
    accepted = np.array(
        [valid({k: dims[k][i] for k, i in zip(valid_keys, row, strict=True)}) for row in keys]
    )
    grid = grid[accepted[inverse.ravel()]]
    # Column p of `pairs` is the id of the (a, b) value pair a configuration holds.
    columns, offset = [], 0
    for a, b in itertools.combinations(range(len(names)), 2):
        columns.append(offset + grid[:, a] * sizes[b] + grid[:, b])
        offset += sizes[a] * sizes[b]
    pairs = np.stack(columns, axis=1)
    uncovered = np.zeros(offset, dtype=bool)
    uncovered[pairs.ravel()] = True
    chosen = []
    while uncovered.any():
        row = int(uncovered[pairs].sum(axis=1).argmax())
        chosen.append({n: dims[n][i] for n, i in zip(names, grid[row], strict=True)})
        uncovered[pairs[row]] = False
    return chosen


CONSTRUCTOR_KEYS = ["dtype", "qscheme", "reduce_range", "custom_qrange"]


def _accepted_by_torch_ao(name: str):
    """Predicate on the constructor keys: torch.ao's constructor accepts them."""

    def valid(case: dict) -> bool:
        return _construct(ao, name, _constructor_kwargs(name, case))[1] is None

    return valid


def _case_id(case: dict) -> str:
    parts = []
    for key, value in case.items():
        if isinstance(value, bool):
            if value:
                parts.append(key)
        else:
            parts.append(str(value).replace("torch.", "").replace(" ", ""))
    return "-".join(parts)


def _cases() -> Iterator:
    for name in CLASSES:
        for case in all_pairs(_dimensions(name), _accepted_by_torch_ao(name), CONSTRUCTOR_KEYS):
            yield pytest.param(name, case, id=f"{name}-{_case_id(case)}")


CASES = list(_cases())


def _batch(
    shape: tuple[int, ...], layout: str, input_dtype: torch.dtype, generator: torch.Generator
) -> tuple[torch.Tensor, list[int] | None, slice | None]:
    """Standard-normal storage for a batch of ``shape``: the stored tensor, and the permutation
    or last-dim slice that views it as ``shape`` (``None`` for a contiguous batch)."""
    if layout == "contiguous":
        return torch.randn(shape, generator=generator), None, None
    if layout == "permuted":
        order = list(reversed(range(len(shape))))
        return torch.randn([shape[d] for d in order], generator=generator), order, None
    wide = (*shape[:-1], 2 * shape[-1] + 1)
    return torch.randn(wide, generator=generator), None, slice(1, None, 2)


def stream(
    shapes: list[tuple[int, ...]], layout: str, input_dtype: torch.dtype, seed: int
) -> list[torch.Tensor]:
    """The batches of a stream, one per ``STREAM`` entry, of the given shapes and layout.

    The values are scaled and cast in storage, so the batches keep their non-contiguous layout.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for shape, (offset, spread) in zip(itertools.cycle(shapes), STREAM):
        stored, order, last = _batch(shape, layout, input_dtype, generator)
        x = (stored * spread + offset).to(input_dtype)
        if order is not None:
            x = x.permute(order)
        if last is not None:
            x = x[..., last]
        assert x.shape == shape
        batches.append(x)
    return batches


def assert_same_state(ours, reference) -> None:
    """Buffers and qparams equal torch.ao's: values, dtypes and shapes."""
    for key, expected in reference.state_dict().items():
        actual = ours.state_dict()[key]
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), key
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_qparams = reference.calculate_qparams()
        actual_qparams = ours.calculate_qparams()
    for actual, expected, what in zip(
        actual_qparams, expected_qparams, ("scale", "zero_point"), strict=True
    ):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), what
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=what)


def run_stream(name: str, kwargs: dict, batches: list[torch.Tensor]) -> None:
    reference, error = _construct(ao, name, kwargs)
    assert error is None
    ours = getattr(tritonobs, name)(**kwargs)
    for x in batches:
        assert reference(x) is x
        assert ours(x) is x
        assert_same_state(ours, reference)
    assert ours.nonfinite_count.item() == 0


@pytest.mark.parametrize(("name", "case"), CASES)
def test_stream_parity(backend, name, case):
    seed = zlib.crc32(_case_id(case).encode())
    shapes = [case["shape"]] if "shape" in case else SHAPES[1:]
    batches = stream(shapes, case["layout"], case["input_dtype"], seed)
    if case["layout"] != "contiguous":
        assert not all(x.is_contiguous() for x in batches)
    run_stream(name, _constructor_kwargs(name, case), batches)


@pytest.mark.parametrize("name", CLASSES)
def test_pairwise_cases_cover_every_value(name):
    """Every value of every dimension is in some stream; refused configs are tested below."""
    cases = [c for n, c in (p.values for p in CASES) if n == name]
    for key, values in _dimensions(name).items():
        assert {str(c[key]) for c in cases} == {str(v) for v in values}, key


def _shape_axes() -> Iterator:
    # torch.ao's per-channel observers cannot take 1-d batches (see test_observer_bad_input.py).
    for shape in (s for s in SHAPES if len(s) > 1):
        for axis in range(-len(shape), len(shape)):
            yield pytest.param(shape, axis, id=f"{'x'.join(map(str, shape))}-axis{axis}")


@pytest.mark.parametrize("name", PER_CHANNEL)
@pytest.mark.parametrize(("shape", "ch_axis"), list(_shape_axes()))
def test_per_channel_every_rank_and_axis(backend, name, shape, ch_axis):
    batches = stream([shape], "permuted", torch.float32, seed=len(shape) * 10 + ch_axis)
    run_stream(name, {"ch_axis": ch_axis, "dtype": torch.qint8}, batches)


def _degenerate_cases() -> Iterator:
    for name in CLASSES:
        kind = "per_channel" if name in PER_CHANNEL else "per_tensor"
        for qscheme, eps in itertools.product(
            QSCHEMES[kind], [torch.finfo(torch.float32).eps, 1e-3]
        ):
            yield pytest.param(name, qscheme, eps, id=f"{name}-{str(qscheme)[6:]}-{eps:.0e}")


@pytest.mark.parametrize(("name", "qscheme", "eps"), list(_degenerate_cases()))
def test_degenerate_ranges(backend, name, qscheme, eps):
    """Zero and tiny ranges (scale clamped to eps, float qparams' scale replaced by 1), a
    negative denormal-sized value, then ordinary and near-overflow ones."""
    batches = [torch.zeros(3, 4), torch.arange(12.0).reshape(3, 4) * 1e-9]
    batches += [torch.full((3, 4), -1e-30), torch.full((3, 4), 2.5), torch.full((3, 4), 3e38)]
    kwargs = {"qscheme": qscheme, "eps": eps}
    if name in PER_CHANNEL:
        kwargs["ch_axis"] = 1
    run_stream(name, kwargs, batches)


@pytest.mark.parametrize("name", ["MinMaxObserver", "PerChannelMinMaxObserver"])
def test_large_batch(backend, name):
    """A batch big enough for several Triton programs per tensor / per channel (the moving
    averages run the same kernels)."""
    generator = torch.Generator().manual_seed(7)
    batches = [torch.randn(97, 333, generator=generator) * (i + 1) - i for i in range(5)]
    kwargs = {"ch_axis": -1} if name in PER_CHANNEL else {}
    run_stream(name, kwargs, batches)


# Finite float32 values, subnormals and signed zeros included; |x| <= 2**100 keeps the moving
# average's `x + c * (batch - x)` from overflowing.
VALUES = st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32)


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
@pytest.mark.parametrize("name", CLASSES)
def test_random_values_parity(backend, name, data):
    """Hypothesis draws the values of a 5-batch stream (shape fixed per stream) and the config."""
    per_channel = name in PER_CHANNEL
    dtype = data.draw(st.sampled_from(DTYPES))
    qscheme = data.draw(st.sampled_from(QSCHEMES["per_channel" if per_channel else "per_tensor"]))
    rows, columns = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
    kwargs = {"dtype": dtype, "qscheme": qscheme}
    if per_channel:
        kwargs["ch_axis"] = data.draw(st.sampled_from([0, 1, -1]))
    reference, error = _construct(ao, name, kwargs)
    assert error is None
    ours = getattr(tritonobs, name)(**kwargs)
    for _ in range(5):
        values = data.draw(st.lists(VALUES, min_size=rows * columns, max_size=rows * columns))
        x = torch.tensor(values, dtype=torch.float32).reshape(rows, columns)
        reference(x)
        ours(x)
        assert_same_state(ours, reference)


def _constructor_space(name: str) -> Iterator[dict]:
    dims = _dimensions(name)
    for combo in itertools.product(*(dims[k] for k in CONSTRUCTOR_KEYS)):
        yield dict(zip(CONSTRUCTOR_KEYS, combo, strict=True))


@pytest.mark.parametrize("name", CLASSES)
def test_constructor_outcome_over_full_product(name):
    """Where torch.ao raises (e.g. symmetric + reduce_range + quint8), tritonobs raises the same
    exception type; elsewhere both hold the same quantized range."""
    refused = 0
    for case in _constructor_space(name):
        kwargs = _constructor_kwargs(name, case)
        reference, expected_error = _construct(ao, name, kwargs)
        ours, error = _construct(tritonobs, name, kwargs)
        assert error is expected_error, kwargs
        if reference is None:
            refused += 1
            continue
        assert (ours.quant_min, ours.quant_max) == (reference.quant_min, reference.quant_max)
        assert ours.has_customized_qrange == reference.has_customized_qrange
    assert refused > 0
