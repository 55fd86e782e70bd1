"""state_dict compatibility with torch.ao: both directions, old versions, and whole models."""

from __future__ import annotations

import copy
import io
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.ao.quantization as aoq
import torch.ao.quantization.observer as ao
from torch import nn

import tritonobs

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

SETTINGS = {
    "MinMaxObserver": {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
    "MovingAverageMinMaxObserver": {"averaging_constant": 0.25, "eps": 2.0**-10},
    "PerChannelMinMaxObserver": {"ch_axis": 1, "qscheme": torch.per_channel_affine_float_qparams},
    "MovingAveragePerChannelMinMaxObserver": {
        "ch_axis": -1,
        "averaging_constant": 0.5,
        "dtype": torch.qint8,
        "qscheme": torch.per_channel_symmetric,
    },
}
NAMES = list(SETTINGS)
PER_CHANNEL = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]


def _make(module, name: str):
    return getattr(module, name)(**SETTINGS[name])


def _batches(seed: int, n: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 4, generator=generator) * (i + 1) + i - 2 for i in range(n)]


def _qparams(obs) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return obs.calculate_qparams()


def _assert_same(ours, reference) -> None:
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for key, value in reference_state.items():
        actual = ours_state[key]
        assert (actual.dtype, actual.shape) == (value.dtype, value.shape), key
        torch.testing.assert_close(actual, value, atol=0, rtol=0, msg=key)
    for actual, expected in zip(_qparams(ours), _qparams(reference), strict=True):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
        torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def _roundtrip(state: dict) -> dict:
    """Through torch.save/torch.load, as a checkpoint would go."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["torch_ao_to_tritonobs", "tritonobs_to_torch_ao"])
@pytest.mark.parametrize("observed", [0, 3])
def test_state_dict_loads_across(backend, name, direction, observed):
    """Save after ``observed`` batches, load into a fresh observer of the other library, then
    both continue the stream: buffers and qparams stay identical."""
    source_module, target_module = (
        (ao, tritonobs) if direction == "torch_ao_to_tritonobs" else (tritonobs, ao)
    )
    source, target = _make(source_module, name), _make(target_module, name)
    batches = _batches(seed=observed)
    for x in batches[:observed]:
        source(x)
    target.load_state_dict(_roundtrip(source.state_dict()))
    ours, reference = (target, source) if target_module is tritonobs else (source, target)
    _assert_same(ours, reference)
    for x in batches[observed:]:
        source(x)
        target(x)
        _assert_same(ours, reference)


def _old_state_dict(obs, version: int | None) -> OrderedDict:
    """``obs``'s state dict as an older torch.ao would have written it."""
    state = obs.state_dict()
    metadata = copy.deepcopy(state._metadata)
    old = OrderedDict((k, v.clone()) for k, v in state.items())
    if version is None:
        metadata[""].pop("version")
    else:
        metadata[""]["version"] = version
    if version is None or version < 2:
        del old["eps"]
    if version is not None and version < 3 and hasattr(obs, "ch_axis"):
        old["min_vals"], old["max_vals"] = old.pop("min_val"), old.pop("max_val")
    old._metadata = metadata  # type: ignore[attr-defined]
    return old


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("version", [None, 1, 2])
def test_old_versions_load_like_torch_ao(backend, name, version):
    """Version 1 (and unversioned) dicts have no eps; versioned per-channel dicts before 3 name
    the buffers min_vals/max_vals."""
    writer = _make(ao, name)
    for x in _batches(seed=11, n=2):
        writer(x)
    old = _old_state_dict(writer, version)
    if version is not None and name in PER_CHANNEL:
        assert "min_vals" in old and "min_val" not in old
    ours = _make(tritonobs, name)
    ours.load_state_dict(copy.deepcopy(old))
    if version is not None and name in PER_CHANNEL:
        # torch.ao 2.13 resizes min_val/max_val for a min_vals/max_vals dict but never copies
        # the values (its parent loader looks for min_val), leaving uninitialised memory; the
        # reference is the observer that wrote the dict (its eps is the default one).
        reference = writer
    else:
        reference = _make(ao, name)
        reference.load_state_dict(copy.deepcopy(old))
    _assert_same(ours, reference)
    for x in _batches(seed=12, n=2):
        reference(x)
        ours(x)
        _assert_same(ours, reference)


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_uninitialised_per_channel_state_dict_loads(backend, name):
    reference, ours = _make(ao, name), _make(tritonobs, name)
    observed = _make(tritonobs, name)
    observed(torch.randn(2, 3, 4))
    ours.load_state_dict(observed.state_dict())
    ours.load_state_dict(_make(ao, name).state_dict())
    _assert_same(ours, reference)


@pytest.mark.parametrize("name", PER_CHANNEL)
@pytest.mark.parametrize("strict", [True, False])
def test_missing_per_channel_keys_like_torch_ao(name, strict):
    outcomes = []
    for module in (ao, tritonobs):
        source = _make(module, name)
        source(torch.randn(2, 3, 4))
        state = source.state_dict()
        del state["max_val"]
        target = _make(module, name)
        try:
            result = target.load_state_dict(state, strict=strict)
            outcomes.append(("ok", sorted(result.missing_keys), tuple(target.min_val.shape)))
        except RuntimeError as error:
            outcomes.append(("raises", "Missing key(s)" in str(error), "max_val" in str(error)))
    assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------------------------------------
# Whole models: torch.ao.quantization.prepare with tritonobs observers


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = aoq.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 5 * 5, 6)
        self.dequant = aoq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.flatten(1)))


def _prepared(module, seed: int = 0) -> nn.Module:
    """A model prepared for static quantization with ``module``'s observers: a different observer
    class on each submodule."""
    torch.manual_seed(seed)
    model = _Net().eval()
    weight = module.default_per_channel_weight_observer
    model.qconfig = aoq.QConfig(activation=module.MinMaxObserver.with_args(), weight=weight)
    model.conv.qconfig = aoq.QConfig(
        activation=module.MovingAverageMinMaxObserver.with_args(averaging_constant=0.1),
        weight=weight,
    )
    model.fc.qconfig = aoq.QConfig(
        activation=module.MovingAveragePerChannelMinMaxObserver.with_args(
            ch_axis=1, qscheme=torch.per_channel_affine
        ),
        weight=weight,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aoq.prepare(model)


def _calibrate(model: nn.Module, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(4):
            model(torch.randn(2, 3, 7, 7, generator=generator) * (i + 1))


def _observers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ao.ObserverBase)}


def _assert_models_same(ours: nn.Module, reference: nn.Module) -> None:
    ours_observers, reference_observers = _observers(ours), _observers(reference)
    assert ours_observers.keys() == reference_observers.keys()
    assert len(ours_observers) == 3  # quant, conv and fc outputs
    for key, observer in reference_observers.items():
        _assert_same(ours_observers[key], observer)


def test_prepare_uses_tritonobs_observers_and_matches_torch_ao(backend):
    ours, reference = _prepared(tritonobs), _prepared(ao)
    assert all(type(m).__module__ == "tritonobs.observer" for m in _observers(ours).values())
    _calibrate(ours)
    _calibrate(reference)
    _assert_models_same(ours, reference)


@pytest.mark.parametrize(
    ("get", "load"),
    [
        (tritonobs.get_observer_state_dict, tritonobs.load_observer_state_dict),
        (aoq.get_observer_state_dict, aoq.load_observer_state_dict),
        (tritonobs.get_observer_state_dict, aoq.load_observer_state_dict),
        (aoq.get_observer_state_dict, tritonobs.load_observer_state_dict),
    ],
    ids=["tritonobs", "torch_ao", "tritonobs_get", "tritonobs_load"],
)
@pytest.mark.parametrize(
    ("source_module", "target_module"),
    [(tritonobs, tritonobs), (ao, tritonobs), (tritonobs, ao)],
    ids=["tritonobs_to_tritonobs", "torch_ao_to_tritonobs", "tritonobs_to_torch_ao"],
)
def test_observer_state_dict_round_trip(get, load, source_module, target_module):
    source = _prepared(source_module)
    _calibrate(source)
    state = get(source)
    assert state and all("activation_post_process" in k for k in state)
    target = _prepared(target_module, seed=1)
    load(target, _roundtrip(state))
    ours, reference = (target, source) if target_module is tritonobs else (source, target)
    _assert_models_same(ours, reference)
    # The weights were not part of the observer state.
    assert not torch.equal(target.conv.weight, source.conv.weight)


@pytest.mark.parametrize("drop", ["missing", "unexpected"])
def test_load_observer_state_dict_with_bad_keys_like_torch_ao(drop):
    """torch.ao loads observers non-strictly (a missing or unexpected key is no error): the
    same outcome, and the same observers afterwards."""
    targets = []
    for module, load in (
        (ao, aoq.load_observer_state_dict),
        (tritonobs, tritonobs.load_observer_state_dict),
    ):
        source = _prepared(module)
        _calibrate(source)
        state = aoq.get_observer_state_dict(source)
        if drop == "missing":
            del state["fc.activation_post_process.min_val"]
        else:
            state["fc.activation_post_process.extra"] = torch.zeros(1)
        target = _prepared(module)
        load(target, state)
        targets.append(target)
    reference, ours = targets
    _assert_models_same(ours, reference)


def test_converted_model_equals_torch_ao(backend):
    """convert() reads the observers' qparams (weights observed per channel by tritonobs):
    the quantized models are the same."""
    models = []
    for module in (tritonobs, ao):
        torch.manual_seed(0)
        model = _Net().eval()
        model.qconfig = aoq.QConfig(
            activation=module.MovingAverageMinMaxObserver.with_args(averaging_constant=0.5),
            weight=module.default_per_channel_weight_observer,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = aoq.prepare(model)
            _calibrate(model)
            models.append(aoq.convert(model))
    ours, reference = models
    for name in ("quant", "conv", "fc"):
        mine, theirs = getattr(ours, name), getattr(reference, name)
        assert (mine.scale, mine.zero_point) == (theirs.scale, theirs.zero_point), name
    for name in ("conv", "fc"):
        mine, theirs = getattr(ours, name).weight(), getattr(reference, name).weight()
        assert torch.equal(mine.int_repr(), theirs.int_repr())
        assert torch.equal(mine.q_per_channel_scales(), theirs.q_per_channel_scales())
    x = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours(x), reference(x), atol=0, rtol=0)
