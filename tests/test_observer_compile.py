"""Every observer's forward traces under ``torch.compile(fullgraph=True)`` with no graph break,
and the compiled calls leave the same buffers as eager ones (both tritonobs backends)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
import torch.ao.quantization.observer as ao
from torch._dynamo.utils import counters

import tritonobs

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

OBSERVERS = {
    "MinMaxObserver": {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
    "MovingAverageMinMaxObserver": {"averaging_constant": 0.25},
    "PerChannelMinMaxObserver": {"ch_axis": 1},
    "MovingAveragePerChannelMinMaxObserver": {"ch_axis": -1, "averaging_constant": 0.5},
    "HistogramObserver": {"bins": 64},
    "FixedQParamsObserver": {"scale": 0.5, "zero_point": 3},
    "PlaceholderObserver": {},
    "NoopObserver": {},
    "ReuseInputObserver": {},
    "RecordingObserver": {},
}
STATEFUL = list(OBSERVERS)[:5]
COMPILE_BACKENDS = ["eager", "aot_eager", "inductor"]


def _batches(n: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 5, 7, generator=generator) * (i + 1) + i for i in range(n)]
    # A batch with NaN/inf goes through the same compiled graph.
    batches[2][0, 1, 2] = float("nan")
    batches[2][1, 0, 0] = float("inf")
    return batches


def _state(obs: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = dict(obs.state_dict())
    if hasattr(obs, "nonfinite_count"):
        state["nonfinite_count"] = obs.nonfinite_count
    return state


def _compiled_vs_eager(name: str, compile_backend: str) -> None:
    torch._dynamo.reset()
    counters.clear()
    eager = getattr(tritonobs, name)(**OBSERVERS[name])
    compiled_module = getattr(tritonobs, name)(**OBSERVERS[name])
    compiled = torch.compile(compiled_module, backend=compile_backend, fullgraph=True)
    for x in _batches():
        expected = eager(x)
        actual = compiled(x)
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, equal_nan=True)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] >= 1
    expected_state, actual_state = _state(eager), _state(compiled_module)
    assert actual_state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        assert (actual_state[key].dtype, actual_state[key].shape) == (value.dtype, value.shape)
        torch.testing.assert_close(actual_state[key], value, atol=0, rtol=0, msg=key)
    if name == "RecordingObserver":
        assert len(compiled_module.tensor_val) == len(eager.tensor_val) == len(_batches())


@pytest.mark.parametrize("compile_backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_observer_compiles_fullgraph(backend, name, compile_backend):
    _compiled_vs_eager(name, compile_backend)


@pytest.mark.parametrize("compile_backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("name", list(OBSERVERS)[5:])
def test_pass_through_observer_compiles_fullgraph(name, compile_backend):
    _compiled_vs_eager(name, compile_backend)


def test_qparams_after_compiled_calls_equal_torch_ao(backend):
    """What the compiled observers collected gives torch.ao's qparams."""
    torch._dynamo.reset()
    for name in STATEFUL:
        ours = getattr(tritonobs, name)(**OBSERVERS[name])
        reference = getattr(ao, name)(**OBSERVERS[name])
        compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
        for x in _batches()[:2] + _batches()[3:]:
            compiled(x)
            reference(x)
        for actual, expected in zip(
            ours.calculate_qparams(), reference.calculate_qparams(), strict=True
        ):
            torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def test_observer_inside_a_model_compiles_fullgraph(backend):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(7, 6),
        tritonobs.MovingAverageMinMaxObserver(),
        torch.nn.ReLU(),
        tritonobs.PerChannelMinMaxObserver(ch_axis=-1),
    )
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    with torch.no_grad():
        for x in _batches():
            torch.testing.assert_close(compiled(x), eager(x), atol=0, rtol=0, equal_nan=True)
    assert dict(counters["graph_break"]) == {}
    for (key, value), (_, expected) in zip(
        model.state_dict().items(), eager.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(value, expected, atol=0, rtol=0, msg=key)


def test_torch_ao_min_max_observer_does_not_compile_fullgraph():
    """The motivating failure: torch.ao's observers cannot be traced with fullgraph=True."""
    torch._dynamo.reset()
    compiled = torch.compile(ao.MinMaxObserver(), backend="eager", fullgraph=True)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="marked as skipped"):
        compiled(torch.randn(3, 5))
