"""HistogramObserver vs torch.ao's: buffers, qparams, NaN/inf, state_dict, torch.compile.

Both observers see the same stream, and buffers and qparams are compared bit for bit on both
backends. The torch backend runs torch.ao's re-binning ops. The Triton kernels compute ``linspace``
as torch's CUDA kernel does, which could put a sub-bin mid-point within an ulp of an edge into the
neighbouring bin (``histogram_rebinned_mass`` in ``tests/conftest.py``); none of these streams has
one: measured equal (issue 13), so a Triton-only error of a bin or a zero point shows.
"""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver as AOHistogramObserver

from tritonobs import HistogramObserver

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max"),
]

EXACT = {"atol": 0, "rtol": 0}
CONFIGS = {
    "quint8_affine": {},
    "qint8_symmetric": {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric, "bins": 301},
    "reduce_range": {"bins": 256, "reduce_range": True},
    "custom_qrange": {"dtype": torch.qint8, "quant_min": -100, "quant_max": 60, "bins": 128},
}


def stream(seed: int) -> list[torch.Tensor]:
    """Odd shapes; the range grows on batches 1 and 3 and stays put on 2 and 4."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(5, 123, generator=g),
        torch.randn(77, generator=g) * 2.5,
        torch.randn(3, 1, 17, generator=g),
        torch.randn(2, 3, 5, 7, generator=g) * 6 + 2,
        torch.randn(1, generator=g),
    ]


def assert_qparams(ours, theirs) -> None:
    for got, expected in zip(ours, theirs, strict=True):
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, **EXACT)


@pytest.mark.parametrize("config", CONFIGS)
def test_stream_matches_torch_ao(backend, config):
    ours, theirs = HistogramObserver(**CONFIGS[config]), AOHistogramObserver(**CONFIGS[config])
    for x in stream(len(config)):
        assert ours(x) is x
        theirs(x)
        torch.testing.assert_close(ours.min_val, theirs.min_val, **EXACT)
        torch.testing.assert_close(ours.max_val, theirs.max_val, **EXACT)
        torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)
    assert_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


def test_first_batch_qparams_are_torch_ao_exactly(backend):
    ours, theirs = HistogramObserver(bins=512), AOHistogramObserver(bins=512)
    x = torch.randn(7, 45, generator=torch.Generator().manual_seed(1)) * 2
    ours(x)
    theirs(x)
    torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)
    for got, expected in zip(ours.calculate_qparams(), theirs.calculate_qparams(), strict=True):
        torch.testing.assert_close(got, expected, **EXACT)


def test_inf_is_dropped_like_torch_ao_and_nan_is_skipped(backend):
    ours, theirs = HistogramObserver(bins=64), AOHistogramObserver(bins=64)
    x = torch.randn(200, generator=torch.Generator().manual_seed(2))
    with_inf = x.clone()
    with_inf[::9] = float("inf")
    with_inf[4::17] = float("-inf")
    with_nan = x.clone() * 0.5
    with_nan[::5] = float("nan")
    ours(with_inf)
    with pytest.warns(UserWarning, match="torch.inf detected"):
        theirs(with_inf)
    ours(with_nan)
    theirs(with_nan[~with_nan.isnan()])
    torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)
    torch.testing.assert_close(ours.min_val, theirs.min_val, **EXACT)
    torch.testing.assert_close(ours.max_val, theirs.max_val, **EXACT)
    expected = (~torch.isfinite(with_inf)).sum() + with_nan.isnan().sum()
    assert ours.nonfinite_count.item() == expected.item()


def test_empty_and_all_nan_batches_leave_state_unchanged(backend):
    observer = HistogramObserver(bins=32)
    observer(torch.randn(50, generator=torch.Generator().manual_seed(3)))
    before = {k: v.clone() for k, v in observer.state_dict().items()}
    empty = torch.empty(0, 3)
    assert observer(empty) is empty
    observer(torch.full((6,), float("nan")))
    for key, value in observer.state_dict().items():
        torch.testing.assert_close(value, before[key], **EXACT)
    assert observer.nonfinite_count.item() == 6


@pytest.mark.fallback("no data: the default qparams need no kernel")
def test_uninitialised_qparams_warn_and_default(backend):
    ours, theirs = HistogramObserver(), AOHistogramObserver()
    with pytest.warns(UserWarning, match="must run observer"):
        got = ours.calculate_qparams()
    with pytest.warns(UserWarning, match="must run observer"):
        expected = theirs.calculate_qparams()
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **EXACT)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_torch_ao_on_float32_values(backend, dtype):
    ours, theirs = HistogramObserver(bins=256), AOHistogramObserver(bins=256)
    x = (torch.randn(9, 31, generator=torch.Generator().manual_seed(4)) * 3).to(dtype)
    ours(x)
    theirs(x.float())
    torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)
    for got, expected in zip(ours.calculate_qparams(), theirs.calculate_qparams(), strict=True):
        torch.testing.assert_close(got, expected, **EXACT)


def test_torch_ao_state_dict_loads_into_ours_and_back(backend):
    theirs = AOHistogramObserver(bins=128)
    for x in stream(5)[:3]:
        theirs(x)
    ours = HistogramObserver(bins=128)
    ours.load_state_dict(theirs.state_dict())
    for name in ("histogram", "min_val", "max_val"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), **EXACT)
    assert_qparams(ours.calculate_qparams(), theirs.calculate_qparams())
    back = AOHistogramObserver(bins=128)
    back.load_state_dict(ours.state_dict())
    assert_qparams(back.calculate_qparams(), theirs.calculate_qparams())
    # Both continue from the loaded state the same way (no re-binning: the range holds x).
    x = stream(5)[2]
    ours(x)
    theirs(x)
    torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)


def test_version_2_state_dict_with_empty_min_max_loads_as_uninitialised(backend):
    state = AOHistogramObserver(bins=16).state_dict()
    state["min_val"] = torch.tensor([])
    state["max_val"] = torch.tensor([])
    state._metadata[""]["version"] = 2
    ours, theirs = HistogramObserver(bins=16), AOHistogramObserver(bins=16)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    for observer in (ours, theirs):
        assert observer.min_val.shape == () and observer.min_val.item() == float("inf")
        assert observer.max_val.shape == () and observer.max_val.item() == float("-inf")
    x = torch.randn(40, generator=torch.Generator().manual_seed(6))
    ours(x)
    theirs(x)
    torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)


@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager", "inductor"])
def test_torch_compile_fullgraph_matches_eager(backend, compile_backend):
    torch._dynamo.reset()
    eager, compiled = HistogramObserver(bins=64), HistogramObserver(bins=64)
    buffers = dict(compiled.named_buffers())
    pointers = {name: buf.data_ptr() for name, buf in buffers.items()}
    forward = torch.compile(compiled, backend=compile_backend, fullgraph=True)
    g = torch.Generator().manual_seed(7)
    # Same shape every call (one graph); the range grows on the 2nd and 4th call.
    for scale in (1.0, 3.0, 2.0, 5.0):
        x = torch.randn(6, 19, generator=g) * scale
        eager(x)
        assert forward(x) is not None
    for name in ("histogram", "min_val", "max_val", "nonfinite_count"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), **EXACT)
        # The compiled op writes the module's own buffers (functionalized, then copied back or
        # re-inplaced): same tensors, same storage.
        assert getattr(compiled, name) is buffers[name]
        assert buffers[name].data_ptr() == pointers[name]


def test_observer_buffers_keep_identity_and_dtype(backend):
    observer = HistogramObserver(bins=20)
    buffers = {name: buf for name, buf in observer.named_buffers()}
    pointers = {name: buf.data_ptr() for name, buf in buffers.items()}
    for x in stream(8)[:3]:
        observer(x)
    for name, buf in observer.named_buffers():
        assert buf is buffers[name] and buf.data_ptr() == pointers[name]
    assert observer.histogram.dtype == torch.float32 and observer.histogram.shape == (20,)


def test_loading_a_state_dict_keeps_buffer_identity(backend):
    source = HistogramObserver(bins=24)
    for x in stream(12)[:2]:
        source(x)
    observer = HistogramObserver(bins=24)
    buffers = dict(observer.named_buffers())
    observer.load_state_dict(source.state_dict())
    for name, buf in observer.named_buffers():
        assert buf is buffers[name]
        if name != "nonfinite_count":
            torch.testing.assert_close(buf, getattr(source, name), **EXACT)


def test_many_batches_keep_total_count(backend):
    # Re-binning moves mass, never loses it: the histogram's total is the number of values seen.
    observer = HistogramObserver(bins=100)
    seen = 0
    for x in stream(9) + stream(10):
        observer(x)
        seen += x.numel()
    torch.testing.assert_close(observer.histogram.sum(), torch.tensor(float(seen)), **EXACT)


def test_float64_buffers(backend):
    # factory_kwargs dtype=float64: buffers stay float64. The torch backend follows torch.ao's ops
    # (float64 re-binning); the Triton kernels keep float32 statistics and store them as float64,
    # which on this stream equals torch.ao's float64 histogram (measured).
    kwargs = {"bins": 64, "factory_kwargs": {"dtype": torch.float64}}
    ours, theirs = HistogramObserver(**kwargs), AOHistogramObserver(**kwargs)
    for x in stream(11)[:3]:
        ours(x)
        theirs(x)
        for name in ("histogram", "min_val", "max_val"):
            assert getattr(ours, name).dtype == torch.float64
        torch.testing.assert_close(ours.min_val, theirs.min_val, **EXACT)
        torch.testing.assert_close(ours.max_val, theirs.max_val, **EXACT)
        torch.testing.assert_close(ours.histogram, theirs.histogram, **EXACT)
    assert_qparams(ours.calculate_qparams(), theirs.calculate_qparams())
