"""The public API is torch.ao's: names, signatures, buffers, versions, reprs, factories, imports."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.ao.quantization.observer as ao

import tritonobs

# The affine-quantization names torch.ao added later (an experimental copy of pytorch/ao's),
# which tritonobs does not provide.
AFFINE_NAMES = {
    "AffineQuantizedObserverBase",
    "Granularity",
    "MappingType",
    "PerAxis",
    "PerBlock",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "PerToken",
    "TorchAODType",
    "ZeroPointDomain",
    "get_block_size",
}

OBSERVER_CLASSES = [
    name
    for name in ao.__all__
    if isinstance(getattr(ao, name), type)
    and issubclass(getattr(ao, name), ao.ObserverBase)
    and name not in AFFINE_NAMES
]
# Concrete classes and the arguments they need.
CONCRETE = {
    "MinMaxObserver": {},
    "MovingAverageMinMaxObserver": {},
    "PerChannelMinMaxObserver": {},
    "MovingAveragePerChannelMinMaxObserver": {},
    "HistogramObserver": {},
    "FixedQParamsObserver": {"scale": 0.25, "zero_point": 3},
    "PlaceholderObserver": {},
    "RecordingObserver": {},
    "NoopObserver": {},
    "ReuseInputObserver": {},
}
MIN_MAX_CLASSES = [
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
]
FACTORIES = [
    name
    for name in ao.__all__
    if name.startswith(("default_", "per_channel_weight", "weight_observer"))
]


def _pair(name: str, **kwargs):
    kwargs = {**CONCRETE[name], **kwargs}
    return getattr(ao, name)(**kwargs), getattr(tritonobs, name)(**kwargs)


def _attributes(obs: torch.nn.Module) -> dict:
    """The configuration attributes an observer carries to the quantized module."""
    names = (
        "dtype",
        "qscheme",
        "quant_min",
        "quant_max",
        "reduce_range",
        "has_customized_qrange",
        "is_dynamic",
        "ch_axis",
        "averaging_constant",
        "bins",
        "custom_op",
        "dst_nbins",
        "upsample_rate",
    )
    out = {n: getattr(obs, n) for n in names if hasattr(obs, n)}
    if hasattr(obs, "eps"):
        out["eps"] = obs.eps.tolist() if isinstance(obs.eps, torch.Tensor) else obs.eps
    return out


def _buffers(obs: torch.nn.Module) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in obs.state_dict().items()}


def test_missing_names_are_only_the_affine_ones():
    missing = [n for n in ao.__all__ if not hasattr(tritonobs, n)]
    assert set(missing) == AFFINE_NAMES


def test_all_lists_torch_ao_names_the_backend_switch_calibrate_and_llm_calibrators():
    expected = {n for n in ao.__all__ if n not in AFFINE_NAMES}
    expected |= {"get_backend", "set_backend", "use_backend", "__version__"}
    expected |= {"calibrate", "CalibrationResult", "CalibrationError"}
    expected |= {"AmaxHistogramObserver", "histogram_amax", "weight_qparams"}
    assert set(tritonobs.__all__) == expected
    assert all(hasattr(tritonobs, n) for n in tritonobs.__all__)


def _parameters(obj) -> list[tuple[str, object, object]]:
    return [(p.name, p.default, p.kind) for p in inspect.signature(obj).parameters.values()]


@pytest.mark.parametrize("name", OBSERVER_CLASSES)
def test_constructor_signature_equals_torch_ao(name):
    assert _parameters(getattr(tritonobs, name)) == _parameters(getattr(ao, name))


@pytest.mark.parametrize("name", ["get_observer_state_dict", "load_observer_state_dict"])
def test_function_signature_equals_torch_ao(name):
    assert [p[0] for p in _parameters(getattr(tritonobs, name))] == [
        p[0] for p in _parameters(getattr(ao, name))
    ]


@pytest.mark.parametrize("name", OBSERVER_CLASSES)
def test_observers_are_torch_ao_observers(name):
    cls = getattr(tritonobs, name)
    assert issubclass(cls, ao.ObserverBase)
    if name in CONCRETE:
        assert isinstance(cls(**CONCRETE[name]), ao.ObserverBase)


@pytest.mark.parametrize("name", list(CONCRETE))
def test_attributes_and_buffers_equal_torch_ao(name):
    reference, ours = _pair(name)
    assert _attributes(ours) == _attributes(reference)
    assert _buffers(ours) == _buffers(reference)
    # The only buffer torch.ao lacks is the non-persistent NaN/inf counter.
    extra = {k for k, _ in ours.named_buffers()} - {k for k, _ in reference.named_buffers()}
    assert extra <= {"nonfinite_count"}
    assert "nonfinite_count" not in ours.state_dict()


@pytest.mark.parametrize("name", [*MIN_MAX_CLASSES, "HistogramObserver"])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_buffers_after_data_equal_torch_ao(name, input_dtype):
    reference, ours = _pair(name)
    x = torch.randn(4, 6).to(input_dtype)
    reference(x)
    ours(x)
    assert _buffers(ours) == _buffers(reference)


@pytest.mark.parametrize("name", [*MIN_MAX_CLASSES, "HistogramObserver"])
def test_version_is_3(name):
    assert getattr(tritonobs, name)._version == getattr(ao, name)._version == 3
    _, ours = _pair(name)
    assert ours.state_dict()._metadata[""]["version"] == 3


@pytest.mark.parametrize("name", list(CONCRETE))
def test_extra_repr_equals_torch_ao(name):
    reference, ours = _pair(name)
    assert ours.extra_repr() == reference.extra_repr()
    assert repr(ours).split("(", 1)[1] == repr(reference).split("(", 1)[1]


@pytest.mark.parametrize("name", [*MIN_MAX_CLASSES, "HistogramObserver"])
def test_extra_repr_after_data_equals_torch_ao(name):
    reference, ours = _pair(name)
    x = torch.randn(3, 5)
    reference(x)
    ours(x)
    assert ours.extra_repr() == reference.extra_repr()


@pytest.mark.parametrize("name", MIN_MAX_CLASSES)
def test_reset_min_max_vals_equals_torch_ao(name):
    reference, ours = _pair(name)
    x = torch.randn(3, 5)
    for obs in (reference, ours):
        obs(x)
        obs.reset_min_max_vals()
    assert _buffers(ours) == _buffers(reference)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, atol=0, rtol=0)
    y = torch.randn(3, 5) + 2
    reference(y)
    ours(y)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, atol=0, rtol=0)


def test_reset_min_max_vals_is_not_implemented_where_torch_ao_has_none():
    reference, ours = _pair("HistogramObserver")
    with pytest.raises(NotImplementedError):
        reference.reset_min_max_vals()
    with pytest.raises(NotImplementedError):
        ours.reset_min_max_vals()


@pytest.mark.parametrize("name", FACTORIES)
def test_default_factories_build_what_torch_ao_builds(name):
    reference, ours = getattr(ao, name)(), getattr(tritonobs, name)()
    assert type(ours).__name__ == type(reference).__name__
    assert isinstance(ours, getattr(tritonobs, type(reference).__name__))
    assert _attributes(ours) == _attributes(reference)
    assert _buffers(ours) == _buffers(reference)
    assert getattr(tritonobs, name)() is not ours


def test_with_args_chains_and_builds_new_instances():
    for module in (ao, tritonobs):
        factory = module.MinMaxObserver.with_args(dtype=torch.qint8).with_args(
            quant_min=-5, quant_max=5
        )
        first, second = factory(), factory()
        assert first is not second
        assert (first.dtype, first.quant_min, first.quant_max) == (torch.qint8, -5, 5)
        assert factory(quant_max=7).quant_max == 7
    ours = tritonobs.MinMaxObserver.with_args(dtype=torch.qint8)
    reference = ao.MinMaxObserver.with_args(dtype=torch.qint8)
    assert (
        repr(ours).replace("tritonobs.observer", "torch.ao.quantization.observer").split("at 0x")[0]
        == repr(reference).split("at 0x")[0]
    )


def test_factories_are_torch_ao_partial_wrappers_for_qconfig_comparison():
    """torch.ao compares QConfigs through ``isinstance(..., _PartialWrapper)``: tritonobs
    factories built separately with the same arguments compare equal, as torch.ao's do."""
    from torch.ao.quantization.qconfig import QConfig, qconfig_equals

    def qconfig(module):
        return QConfig(
            activation=module.MinMaxObserver.with_args(quant_min=0, quant_max=127),
            weight=module.default_per_channel_weight_observer,
        )

    assert isinstance(tritonobs.MinMaxObserver.with_args(), ao._PartialWrapper)
    assert qconfig_equals(qconfig(ao), qconfig(ao))
    assert qconfig_equals(qconfig(tritonobs), qconfig(tritonobs))
    assert not qconfig_equals(qconfig(tritonobs), qconfig(ao))


def test_with_callable_args_evaluates_at_each_construction():
    for module in (ao, tritonobs):
        counter = iter(range(100))

        def next_eps(counter=counter):
            return 2.0 ** -(10 + next(counter))

        factory = module.MinMaxObserver.with_callable_args(eps=next_eps).with_args(
            dtype=torch.qint8
        )
        eps = [factory().eps.item() for _ in range(3)]
        assert eps == [2.0**-10, 2.0**-11, 2.0**-12]
        assert factory(eps=0.5).eps.item() == 0.5
        assert factory().dtype == torch.qint8
        chained = module.PerChannelMinMaxObserver.with_args(ch_axis=1).with_callable_args(
            eps=lambda: 0.125
        )
        built = chained()
        assert (built.ch_axis, built.eps.item()) == (1, 0.125)


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


# Installs a sys.meta_path finder that refuses the given top-level names, after dropping any
# module of that name already imported.
BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if any(name == n or name.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

def block(*names):
    for loaded in [m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names)]:
        del sys.modules[loaded]
    sys.meta_path.insert(0, Blocker(names))
"""

# Uses every min/max observer on CPU and prints the qparams, one line per observer.
USE = """
import warnings
import torch
import tritonobs
torch.manual_seed(0)
x = torch.randn(4, 6)
for name in ("MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
             "MovingAveragePerChannelMinMaxObserver"):
    obs = getattr(tritonobs, name)()
    obs(x)
    obs(x * 2)
    print(name, [t.tolist() for t in obs.calculate_qparams()])
"""


def _expected_lines() -> list[str]:
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    lines = []
    for name in MIN_MAX_CLASSES:
        obs = getattr(ao, name)()
        obs(x)
        obs(x * 2)
        lines.append(f"{name} {[t.tolist() for t in obs.calculate_qparams()]}")
    return lines


def test_works_without_triton():
    result = _run_python(
        BLOCKER
        + "block('triton')\n"
        + USE
        + textwrap.dedent("""
        assert "triton" not in sys.modules
        from tritonobs.backend import triton_available, use_backend
        assert not triton_available()
        with use_backend("triton"):
            try:
                tritonobs.MinMaxObserver()(x)
            except RuntimeError as error:
                print("error:", error)
        """)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == _expected_lines()
    assert lines[4] == "error: TRITONOBS_BACKEND=triton but the triton package is not installed"


def test_works_without_torch_ao_quantization():
    # torch itself imports torch.ao.quantization, so the block goes in after `import torch`.
    result = _run_python(
        "import torch\n"
        + BLOCKER
        + "block('torch.ao.quantization')\n"
        + USE
        + textwrap.dedent("""
        assert "torch.ao.quantization" not in sys.modules
        print(tritonobs.default_observer().quant_max, tritonobs.HistogramObserver().bins)
        eps = iter([0.5, 0.25])
        factory = tritonobs.MinMaxObserver.with_callable_args(eps=lambda: next(eps))
        print(factory.with_args(dtype=torch.qint8)().eps.item(), factory().eps.item())
        print(tritonobs.ObserverBase.__mro__[1].__module__)
        """)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == _expected_lines()
    assert lines[4] == "127 2048"
    assert lines[5] == "0.5 0.25"
    assert lines[6] == "tritonobs._base"


def test_import_neither_imports_triton_nor_probes_cuda_nor_warns():
    result = _run_python("""
        import sys
        import warnings
        import torch
        warnings.simplefilter("error")
        probes = []
        for name in ("is_available", "device_count", "get_device_capability", "init",
                     "current_device", "get_device_properties"):
            def probe(*args, _name=name, **kwargs):
                probes.append(_name)
                raise AssertionError(f"torch.cuda.{_name} called during import")
            setattr(torch.cuda, name, probe)
        import tritonobs
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] == "triton" or m.startswith("tritonobs.kernels."))
        print(probes, loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


def test_reduce_range_warns_like_torch_ao():
    with warnings.catch_warnings(record=True) as reference:
        warnings.simplefilter("always")
        ao.MinMaxObserver(reduce_range=True)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        tritonobs.MinMaxObserver(reduce_range=True)
    assert [w.category for w in ours] == [w.category for w in reference] == [UserWarning]
    assert " ".join(str(ours[0].message).split()) == " ".join(str(reference[0].message).split())
