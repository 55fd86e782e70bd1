"""The backend switch, the per-device dispatch of the ``tritonobs::*`` ops, and ``opcheck``."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import torch

import tritonobs
from tritonobs import backend as backend_module
from tritonobs.backend import get_backend, set_backend, use_backend, uses_triton

PACKAGE_DIR = Path(tritonobs.__file__).parent
OPS = ("tritonobs::aminmax", "tritonobs::aminmax_per_channel")


@pytest.fixture
def no_override():
    """Clears the Python override so the environment variable decides, and forgets the variable's
    value read so far (it is read once); restores both afterwards."""
    previous = set_backend(None)
    backend_module._environment_backend.cache_clear()
    yield
    backend_module._environment_backend.cache_clear()
    set_backend(previous)


@pytest.mark.parametrize("name", ["auto", "torch", "triton", " Torch ", "TRITON"])
def test_env_var_selects_backend(monkeypatch, no_override, name):
    monkeypatch.setenv("TRITONOBS_BACKEND", name)
    assert get_backend() == name.strip().lower()


def test_env_var_unset_means_auto(monkeypatch, no_override):
    monkeypatch.delenv("TRITONOBS_BACKEND", raising=False)
    assert get_backend() == "auto"


@pytest.mark.parametrize("bad", ["cuda", "", "tritonn", "none"])
def test_env_var_invalid_value_is_a_clear_error(monkeypatch, no_override, bad):
    monkeypatch.setenv("TRITONOBS_BACKEND", bad)
    with pytest.raises(ValueError, match="TRITONOBS_BACKEND must be one of auto, torch, triton"):
        get_backend()


@pytest.mark.parametrize("bad", ["cuda", "Torch", "", 1])
def test_set_backend_invalid_value_is_a_clear_error(no_override, bad):
    with pytest.raises(ValueError, match="backend must be one of auto, torch, triton"):
        set_backend(bad)
    assert backend_module._override is None


def test_set_backend_wins_over_env_and_returns_previous(monkeypatch, no_override):
    monkeypatch.setenv("TRITONOBS_BACKEND", "triton")
    assert set_backend("torch") is None
    assert get_backend() == "torch"
    assert set_backend(None) == "torch"
    assert get_backend() == "triton"


def test_use_backend_restores_on_exit_and_on_error(monkeypatch, no_override):
    monkeypatch.setenv("TRITONOBS_BACKEND", "auto")
    with use_backend("triton"):
        assert get_backend() == "triton"
        with use_backend("torch"):
            assert get_backend() == "torch"
        assert get_backend() == "triton"
    assert get_backend() == "auto"
    with pytest.raises(RuntimeError, match="inside"), use_backend("torch"):
        raise RuntimeError("inside")
    assert get_backend() == "auto"
    with pytest.raises(ValueError), use_backend("gpu"):  # type: ignore[arg-type]
        pass
    assert get_backend() == "auto"


@pytest.mark.parametrize(
    ("name", "device", "expected"),
    [
        ("auto", "cpu", False),
        ("auto", "cuda", True),
        ("torch", "cpu", False),
        ("torch", "cuda", False),
        ("triton", "cpu", True),
        ("triton", "cuda", True),
    ],
)
def test_uses_triton_decision_table(name, device, expected):
    with use_backend(name):
        assert uses_triton(torch.device(device)) is expected


def test_triton_backend_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend_module, "triton_available", lambda: False)
    with (
        use_backend("triton"),
        pytest.raises(RuntimeError, match="triton package is not installed"),
    ):
        uses_triton(torch.device("cpu"))
    with use_backend("auto"):
        assert uses_triton(torch.device("cuda")) is False


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("key", ["CPU", "CUDA", "Meta"])
def test_dispatcher_has_a_kernel_per_device(op, key):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def _fake_launcher_module(monkeypatch, module: str, function: str, calls: list) -> None:
    """Put a stand-in ``tritonobs.kernels.<module>`` whose launcher records its call and defers to
    the torch reference, so the routing is visible without running Triton."""
    op_module = sys.modules[f"tritonobs.ops.{module}"]
    reference = getattr(op_module, f"{module}_torch")

    def launcher(*args):
        calls.append(args)
        return reference(*args)

    fake = types.ModuleType(f"tritonobs.kernels.{module}")
    setattr(fake, function, launcher)
    monkeypatch.setitem(sys.modules, f"tritonobs.kernels.{module}", fake)


@pytest.mark.parametrize(
    ("observer", "module"),
    [
        (tritonobs.MinMaxObserver, "aminmax"),
        (tritonobs.MovingAverageMinMaxObserver, "aminmax"),
        (tritonobs.PerChannelMinMaxObserver, "aminmax_per_channel"),
        (tritonobs.MovingAveragePerChannelMinMaxObserver, "aminmax_per_channel"),
    ],
)
@pytest.mark.parametrize(
    ("name", "expect_launcher"), [("torch", False), ("triton", True), ("auto", False)]
)
def test_observer_forward_routes_through_the_switch(
    monkeypatch, observer, module, name, expect_launcher
):
    calls: list = []
    _fake_launcher_module(monkeypatch, module, f"{module}_triton", calls)
    x = torch.randn(3, 5)
    with use_backend(name):
        obs = observer()
        obs(x)
    assert len(calls) == int(expect_launcher)
    assert torch.equal(obs.min_val, x.amin(dim=1) if "PerChannel" in observer.__name__ else x.min())


def test_compiled_observer_follows_the_switch_without_recompiling(monkeypatch):
    """The switch is read when the op runs, not when it is traced."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    calls: list = []
    _fake_launcher_module(monkeypatch, "aminmax", "aminmax_triton", calls)
    torch._dynamo.reset()
    counters.clear()
    obs = tritonobs.MinMaxObserver()
    compiled = torch.compile(obs, backend="aot_eager", fullgraph=True)
    with use_backend("torch"):
        compiled(torch.randn(4, 5))
    with use_backend("triton"):
        compiled(torch.randn(4, 5))
    assert len(calls) == 1
    assert counters["stats"]["unique_graphs"] == 1


def _attribute_chains(tree: ast.AST) -> set[str]:
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


@pytest.mark.parametrize("module", ["observer", "histogram_observer", "_base", "qparams"])
def test_observer_code_does_not_branch_on_device(module):
    """The dispatcher picks the device: observer code never looks at ``is_cuda``/``device.type``."""
    source = (PACKAGE_DIR / f"{module}.py").read_text()
    tree = ast.parse(source)
    assert "is_cuda" not in _attribute_chains(tree)
    compares = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and "device.type" in ast.unparse(node)
    ]
    assert compares == []


def _count():
    return torch.zeros((), dtype=torch.int64)


def _aminmax_samples():
    inf = torch.tensor(float("inf"))
    x = torch.randn(5, 7)
    yield (x, inf, -inf, _count(), None)
    yield (x.t(), torch.tensor(-0.5), torch.tensor(0.5), _count(), None)
    yield (x.to(torch.bfloat16), torch.tensor(-0.5), torch.tensor(0.5), _count(), 0.25)
    yield (torch.tensor([1.0, float("nan"), -float("inf")]), inf, -inf, _count(), None)
    yield (x.half()[:, ::2], inf, -inf, _count(), 0.01)


def _aminmax_per_channel_samples():
    x = torch.randn(2, 3, 5)
    inf = float("inf")
    yield (x, 1, torch.full((3,), inf), torch.full((3,), -inf), _count(), None)
    yield (x, -1, torch.full((5,), -0.1), torch.full((5,), 0.1), _count(), None)
    yield (x.transpose(0, 2), 0, torch.zeros(5), torch.ones(5), _count(), 0.5)
    yield (x.to(torch.bfloat16), 2, torch.full((5,), inf), torch.full((5,), -inf), _count(), 0.01)
    with_nan = x.clone()
    with_nan[0, 1, 2] = float("nan")
    yield (with_nan, 1, torch.zeros(3), torch.ones(3), _count(), None)


@pytest.mark.parametrize(
    ("op", "samples"),
    [
        ("aminmax", _aminmax_samples),
        ("aminmax_per_channel", _aminmax_per_channel_samples),
    ],
)
def test_opcheck_torch_backend(op, samples):
    with use_backend("torch"):
        for args in samples():
            torch.library.opcheck(getattr(torch.ops.tritonobs, op).default, args)
