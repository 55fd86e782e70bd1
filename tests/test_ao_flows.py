"""tritonobs observers as a real client of the quantization flows: FX, eager and torchao's PT2E.

Each flow runs twice on the same model and calibration batches, once with tritonobs observers and
once with the reference observers of the same names (torch.ao's for FX and eager, torchao's for
PT2E). The observers' qparams, the quantized weights and the quantized model's outputs must be
identical.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QConfig, QConfigMapping, QuantStub
from torch.ao.quantization import convert as eager_convert
from torch.ao.quantization import observer as ao
from torch.ao.quantization import prepare as eager_prepare
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import tritonobs
from tritonobs.pt2e import register_with_torchao

# Known deprecations, not about tritonobs: torch.ao's FX and eager flows and their quantized
# tensors, and a pytree check that deep-copying an exported module trips.
pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel"),
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning"),
]

# Observer names and arguments, looked up in tritonobs and in the reference module alike.
CONFIGS: dict[str, tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "minmax": (
        ("MinMaxObserver", {"dtype": torch.quint8}),
        (
            "PerChannelMinMaxObserver",
            {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
        ),
    ),
    "moving_average": (
        (
            "MovingAverageMinMaxObserver",
            {"averaging_constant": 0.2, "dtype": torch.quint8, "quant_min": 0, "quant_max": 127},
        ),
        ("MinMaxObserver", {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}),
    ),
    "histogram": (
        (
            "HistogramObserver",
            {"bins": 256, "dtype": torch.quint8, "quant_min": 0, "quant_max": 127},
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
        ),
    ),
}


class _Net(nn.Module):
    """conv -> relu -> flatten -> linear, with quant/dequant stubs for the eager flow."""

    def __init__(self, stubs: bool) -> None:
        super().__init__()
        self.quant = QuantStub() if stubs else nn.Identity()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.dequant = DeQuantStub() if stubs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(torch.flatten(x, 1)))


def _net(stubs: bool) -> _Net:
    torch.manual_seed(0)
    return _Net(stubs).eval()


def _batches() -> list[torch.Tensor]:
    """Calibration batches whose range grows (the histogram re-bins), one of a single sample."""
    gen = torch.Generator().manual_seed(1)
    shapes_scales = [((2, 3, 5, 5), 1.0), ((1, 3, 5, 5), 3.0), ((3, 3, 5, 5), 0.5)]
    return [torch.randn(s, generator=gen) * k + 0.25 for s, k in shapes_scales]


def _test_input() -> torch.Tensor:
    """Held-out input, partly outside the calibrated range (the quantized model clamps)."""
    return torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(2)) * 4


def _qconfig(source: ModuleType, config: str) -> QConfig:
    (act, act_kwargs), (weight, weight_kwargs) = CONFIGS[config]
    return QConfig(
        activation=getattr(source, act).with_args(**act_kwargs),
        weight=getattr(source, weight).with_args(**weight_kwargs),
    )


def _calibrate(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for x in _batches():
            model(x)
    return model


def _observer_qparams(model: nn.Module, base: type) -> dict[str, tuple[torch.Tensor, ...]]:
    """Every observer's ``calculate_qparams()``, by module name."""
    return {
        name: tuple(module.calculate_qparams())
        for name, module in model.named_modules()
        if isinstance(module, base)
    }


def _flatten(value: Any) -> list[Any]:
    """A state_dict value as plain tensors and numbers (quantized tensors: ints and qparams)."""
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _flatten(item)]
    if isinstance(value, torch.Tensor) and value.is_quantized:
        if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            qparams = [value.q_per_channel_scales(), value.q_per_channel_zero_points()]
            return [value.int_repr(), *qparams, value.q_per_channel_axis()]
        return [value.int_repr(), value.q_scale(), value.q_zero_point()]
    return [value]


def _assert_identical(ours: Any, theirs: Any) -> None:
    ours_flat, theirs_flat = _flatten(ours), _flatten(theirs)
    assert len(ours_flat) == len(theirs_flat)
    for a, b in zip(ours_flat, theirs_flat, strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        else:
            assert a == b


def _assert_same_quantized_model(ours: nn.Module, theirs: nn.Module) -> None:
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key in ours_state:
        _assert_identical(ours_state[key], theirs_state[key])
    with torch.no_grad():
        _assert_identical(ours(_test_input()), theirs(_test_input()))


def _assert_same_observers(ours: nn.Module, theirs: nn.Module, base: type) -> None:
    ours_qparams = _observer_qparams(ours, tritonobs.ObserverBase)
    theirs_qparams = _observer_qparams(theirs, base)
    assert ours_qparams and ours_qparams.keys() == theirs_qparams.keys()
    for name in ours_qparams:
        _assert_identical(ours_qparams[name], theirs_qparams[name])


def _assert_all_tritonobs(model: nn.Module) -> None:
    """Every observer the flow inserted is a tritonobs one."""
    observers = [m for m in model.modules() if isinstance(m, ao.ObserverBase)]
    assert observers and all(isinstance(m, tritonobs.ObserverBase) for m in observers)


@pytest.mark.parametrize("config", CONFIGS)
def test_fx_flow_matches_torch_ao(config: str) -> None:
    example = (_batches()[0],)
    prepared = {}
    for name, source in (("ours", tritonobs), ("theirs", ao)):
        mapping = QConfigMapping().set_global(_qconfig(source, config))
        prepared[name] = _calibrate(prepare_fx(_net(stubs=False), mapping, example_inputs=example))
    _assert_same_observers(prepared["ours"], prepared["theirs"], ao.ObserverBase)
    _assert_all_tritonobs(prepared["ours"])
    _assert_same_quantized_model(convert_fx(prepared["ours"]), convert_fx(prepared["theirs"]))


@pytest.mark.parametrize("config", CONFIGS)
def test_eager_flow_matches_torch_ao(config: str) -> None:
    prepared = {}
    for name, source in (("ours", tritonobs), ("theirs", ao)):
        model = _net(stubs=True)
        model.qconfig = _qconfig(source, config)
        prepared[name] = _calibrate(eager_prepare(model))
    _assert_all_tritonobs(prepared["ours"])
    _assert_same_observers(prepared["ours"], prepared["theirs"], ao.ObserverBase)
    quantized = {name: eager_convert(model) for name, model in prepared.items()}
    assert type(quantized["ours"].fc).__module__.startswith("torch.ao.nn.quantized")
    _assert_same_quantized_model(quantized["ours"], quantized["theirs"])


def _with_bound_args(cls: type, **bound: Any) -> type:
    """``cls`` with constructor arguments bound, as a subclass of the same name.

    torchao's ``prepare_pt2e`` needs a class (it reads ``__name__``), not a ``with_args`` wrapper:
    the workaround docs/ao_flows.md gives.
    """

    def __init__(self: nn.Module, **kwargs: Any) -> None:
        cls.__init__(self, **bound, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__})


def _pt2e_quantizer(source: ModuleType, config: str) -> Any:
    """Annotates every conv and linear: per-tensor activations in and out, weights per config."""
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
    )

    (act, act_kwargs), (weight, weight_kwargs) = CONFIGS[config]
    act_spec = QuantizationSpec(
        dtype=act_kwargs["dtype"],
        quant_min=0,
        quant_max=act_kwargs.get("quant_max", 255),
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=_with_bound_args(
            getattr(source, act),
            **{k: v for k, v in act_kwargs.items() if k in ("averaging_constant", "bins")},
        ),
    )
    weight_qscheme = weight_kwargs["qscheme"]
    weight_spec = QuantizationSpec(
        dtype=torch.qint8,
        quant_min=-128,
        quant_max=127,
        qscheme=weight_qscheme,
        ch_axis=0 if weight_qscheme == torch.per_channel_symmetric else None,
        observer_or_fake_quant_ctr=getattr(source, weight),
    )
    targets = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)

    class _ConvLinearQuantizer(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target in targets:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: act_spec, node.args[1]: weight_spec},
                        output_qspec=act_spec,
                        _annotated=True,
                    )
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            return None

    return _ConvLinearQuantizer()


@pytest.mark.parametrize("config", CONFIGS)
def test_pt2e_flow_matches_torchao(config: str) -> None:
    from torchao.quantization.pt2e import ObserverBase as TorchAOObserverBase
    from torchao.quantization.pt2e import observer as torchao_observers
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    assert register_with_torchao()
    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(
        _net(stubs=False), (_batches()[0],), dynamic_shapes={"x": {0: batch}}
    ).module()
    prepared = {}
    for name, source in (("ours", tritonobs), ("theirs", torchao_observers)):
        model = prepare_pt2e(copy.deepcopy(exported), _pt2e_quantizer(source, config))
        prepared[name] = _calibrate(model)
    _assert_same_observers(prepared["ours"], prepared["theirs"], TorchAOObserverBase)
    quantized = {name: convert_pt2e(model) for name, model in prepared.items()}
    assert not _observer_qparams(quantized["ours"], tritonobs.ObserverBase)
    with torch.no_grad():
        ours, theirs = quantized["ours"](_test_input()), quantized["theirs"](_test_input())
        float_out = exported(_test_input())
    _assert_identical(ours, theirs)
    assert not torch.equal(ours, float_out)
